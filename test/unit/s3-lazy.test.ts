import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { downloadToFile } from "../../src/storage/download-to-file.js";
import { lazyS3, lazyS3FromDescriptor } from "../../src/storage/s3/s3-lazy.js";
import { s3, s3FromDescriptor } from "runctl/aws";
import type { S3StorageDescriptor } from "runctl";
import { caught } from "../support/caught.js";
import { TEST_AWS_CREDENTIALS } from "../support/s3-server.js";
import { tempDir } from "../support/temp-home.js";
import { useS3Server } from "../support/use-s3-server.js";

const server = useS3Server({ buckets: ["runctl-lazy"] });

// The core (an s3:// string in .data()/.outputs(), a saved run's descriptor) makes S3 storages
// without loading the AWS SDK; they must be the same storage as s3(uri) / s3FromDescriptor(d).
describe("S3 storages the core makes without the AWS SDK", () => {
  it("lazyS3(uri) describes the bucket exactly as s3(uri), validates the URI at once, and loads the real storage on use", async () => {
    const lazy = lazyS3("s3://ml-ckpt/team/runs/");
    const real = s3("s3://ml-ckpt/team/runs/");
    expect(lazy.uri).toBe(real.uri);
    expect([lazy.bucket, lazy.prefix]).toEqual([real.bucket, real.prefix]);
    expect(lazy.machineDescriptor()).toEqual(real.machineDescriptor());
    expect(lazy.forwardCredentials).toBe(real.forwardCredentials);
    expect((await caught(Promise.resolve().then(() => lazyS3("http://not-s3")))).code).toBe("INVALID_URI");
    const loaded = await lazy.load();
    expect(loaded.uri).toBe(real.uri);
    expect(loaded.machineDescriptor()).toEqual(real.machineDescriptor());
    // A call goes through the real storage (its key validation, before any request).
    expect((await caught(lazy.stat("../escape"))).code).toBe("INVALID_STORAGE_KEY");
  });

  it("lazyS3FromDescriptor(d) is s3FromDescriptor(d)", async () => {
    const d: S3StorageDescriptor = { kind: "s3", bucket: "bkt", prefix: "p/q", region: "eu-west-1", endpoint: "http://127.0.0.1:4569", forcePathStyle: true, checksums: "when_required", backend: "cli" };
    const lazy = lazyS3FromDescriptor(d);
    const real = s3FromDescriptor(d);
    expect(lazy.uri).toBe(real.uri);
    expect(lazy.machineDescriptor()).toEqual(real.machineDescriptor());
    expect((await lazy.load()).machineDescriptor()).toEqual(real.machineDescriptor());
  });

  it("a lazy storage downloads a file with the real storage's download (parallel ranged GETs), not a streamed get", async () => {
    vi.stubEnv("AWS_ACCESS_KEY_ID", TEST_AWS_CREDENTIALS.accessKeyId);
    vi.stubEnv("AWS_SECRET_ACCESS_KEY", TEST_AWS_CREDENTIALS.secretAccessKey);
    try {
      const lazy = lazyS3FromDescriptor({ kind: "s3", bucket: "runctl-lazy", prefix: "p", region: "us-east-1", endpoint: server.endpoint, forcePathStyle: true, checksums: "when_required", backend: "auto" });
      const body = randomBytes(3 * 1024 * 1024 + 17);
      await lazy.put("model.bin", body);
      const real = await lazy.load();
      const download = vi.spyOn(real, "download");
      const get = vi.spyOn(real, "get");
      const dir = tempDir("lazy-download");
      await expect(downloadToFile(lazy, "model.bin", join(dir, "model.bin"))).resolves.toEqual({ key: "model.bin", size: body.length });
      expect(readFileSync(join(dir, "model.bin")).equals(body)).toBe(true);
      expect(readdirSync(dir)).toEqual(["model.bin"]);
      expect(download).toHaveBeenCalledTimes(1);
      expect(get).not.toHaveBeenCalled();
    } finally {
      vi.unstubAllEnvs();
    }
  });
});
