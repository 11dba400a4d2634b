/**
 * Which uploads sign their body, seen on the wire by a proxy in front of a real S3-protocol server
 * (s3rver 3.7.1): over TLS with a checksum of the body the payload is left out of the signature
 * (`UNSIGNED-PAYLOAD`, botocore's rule), sparing a SHA-256 over every byte; over plain http, or
 * without a checksum, it is signed with the body's SHA-256. Every object comes back identical.
 */
import { createHash, randomBytes } from "node:crypto";
import { Agent } from "node:https";
import { Readable } from "node:stream";
import { crc32 } from "node:zlib";
import { S3Client } from "@aws-sdk/client-s3";
import { afterEach, describe, expect, it } from "vitest";
import { s3 } from "../../src/storage/s3/index.js";
import { startRecordingProxy, type RecordingProxy } from "../support/recording-proxy.js";
import { TEST_AWS_CREDENTIALS } from "../support/s3-server.js";
import { useS3Server } from "../support/use-s3-server.js";

const MiB = 1024 * 1024;
const PART = 5 * MiB;
const BUCKET = "runctl-unsigned-payload";
const server = useS3Server({ buckets: [BUCKET] });
let proxy: RecordingProxy | undefined;
let counter = 0;

afterEach(async () => {
  await proxy?.stop();
  proxy = undefined;
});

/** What each upload request carried: its body's bytes (known from the test's data) and the headers that matter. */
interface SentBody {
  readonly bytes: Buffer;
  readonly contentSha256: string | undefined;
  readonly checksumCrc32: string | undefined;
}

/**
 * Puts a 3-part stream and a small byte array through a proxy (http or https) with the given
 * checksum mode, reads both back, and returns what each upload request carried.
 */
async function uploadThroughProxy(tls: boolean, checksums: "WHEN_SUPPORTED" | "WHEN_REQUIRED"): Promise<SentBody[]> {
  const live = (proxy = await startRecordingProxy(server.endpoint, { tls }));
  const client = new S3Client({
    endpoint: live.endpoint,
    forcePathStyle: true,
    region: "us-east-1",
    credentials: { ...TEST_AWS_CREDENTIALS },
    requestChecksumCalculation: checksums,
    responseChecksumValidation: checksums,
    maxAttempts: 1,
    ...(live.ca ? { requestHandler: { httpsAgent: new Agent({ ca: live.ca }) } } : {}),
  });
  const store = s3(`s3://${BUCKET}/p${++counter}`, { client, partSizeBytes: PART, queueSize: 2 });
  const big = randomBytes(2 * PART + 1000);
  const small = randomBytes(1000);
  await store.put("big.bin", Readable.from([big.subarray(0, 3 * MiB), big.subarray(3 * MiB)]));
  await store.put("small.bin", small);
  const back = async (key: string): Promise<Buffer> => Buffer.concat(await (await store.get(key)).toArray());
  expect((await back("big.bin")).equals(big)).toBe(true);
  expect((await back("small.bin")).equals(small)).toBe(true);

  const header = (h: string | string[] | undefined): string | undefined => (Array.isArray(h) ? h.join(",") : h);
  return live.requests
    .filter((r) => r.method === "PUT")
    .map((r) => {
      const url = new URL(r.url, "http://x");
      const part = Number(url.searchParams.get("partNumber") ?? "0");
      const bytes = url.pathname.endsWith("/small.bin") ? small : big.subarray((part - 1) * PART, part * PART);
      return { bytes, contentSha256: header(r.headers["x-amz-content-sha256"]), checksumCrc32: header(r.headers["x-amz-checksum-crc32"]) };
    });
}

const sha256 = (bytes: Buffer): string => createHash("sha256").update(bytes).digest("hex");
const crc32Base64 = (bytes: Buffer): string => {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(crc32(bytes));
  return out.toString("base64");
};

describe("s3() uploads sign their payload only where it protects something", () => {
  it("over TLS with CRC32 checksums, every part and PutObject is UNSIGNED-PAYLOAD and carries its body's CRC32", async () => {
    const sent = await uploadThroughProxy(true, "WHEN_SUPPORTED");
    expect(sent).toHaveLength(4);
    for (const s of sent) {
      expect(s.contentSha256).toBe("UNSIGNED-PAYLOAD");
      expect(s.checksumCrc32).toBe(crc32Base64(s.bytes));
    }
  });

  it("over TLS without checksums (when_required), the payload is signed with its SHA-256", async () => {
    const sent = await uploadThroughProxy(true, "WHEN_REQUIRED");
    expect(sent).toHaveLength(4);
    for (const s of sent) {
      expect(s.checksumCrc32).toBeUndefined();
      expect(s.contentSha256).toBe(sha256(s.bytes));
    }
  });

  it("over plain http, the payload is signed with its SHA-256 even with a checksum", async () => {
    const sent = await uploadThroughProxy(false, "WHEN_SUPPORTED");
    expect(sent).toHaveLength(4);
    for (const s of sent) {
      expect(s.checksumCrc32).toBe(crc32Base64(s.bytes));
      expect(s.contentSha256).toBe(sha256(s.bytes));
    }
  });
});
