/**
 * The S3 storage against a real S3-protocol server (s3rver 3.7.1 in its own process on 127.0.0.1):
 * objects, pagination past 1,000 keys, batch deletes, multipart uploads, bounded memory for a
 * 200 MB object, downloads to a file, abort, a server killed and restarted mid-operation, and the
 * checkpoint store on top.
 */
import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { checkpointStore } from "../../src/checkpoints/index.js";
import { downloadToFile } from "../../src/storage/download-to-file.js";
import { localDir } from "../../src/storage/local-dir/index.js";
import { s3, type S3Storage, type S3StorageOptions } from "../../src/storage/s3/index.js";
import type { ResumingObjectStream } from "../../src/storage/s3/s3-object-stream.js";
import type { RangedObjectStream } from "../../src/storage/s3/s3-ranged-stream.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS } from "../support/s3-server.js";
import { useS3Server } from "../support/use-s3-server.js";
import { tempDir } from "../support/temp-home.js";
import { caught } from "../support/caught.js";

const MiB = 1024 * 1024;
const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));
const BUCKET = "runctl-s3-e2e";
const server = useS3Server({ buckets: [BUCKET] });
let counter = 0;

/** A storage under a prefix of its own, so that tests never see each other's objects. */
function store(options: S3StorageOptions = {}, prefix = `t${++counter}`): S3Storage {
  return s3(`s3://${BUCKET}/${prefix}`, { endpoint: server.endpoint, ...S3RVER_CLIENT_SETTINGS, credentials: TEST_AWS_CREDENTIALS, ...options });
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}

async function sha256Of(stream: Readable): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest("hex"), bytes };
}

/**
 * `total` bytes of incompressible data generated on demand in 1 MiB chunks (never all in memory),
 * hashed as they are produced; `onChunk` runs before each chunk is handed out.
 */
function generated(total: number, onChunk?: (producedBefore: number) => Promise<void> | void): { stream: Readable; sha256: () => string } {
  const hash = createHash("sha256");
  const seed = randomBytes(MiB);
  async function* chunks(): AsyncGenerator<Buffer> {
    for (let produced = 0, i = 0; produced < total; i++) {
      await onChunk?.(produced);
      const chunk = Buffer.from(seed.subarray(0, Math.min(MiB, total - produced)));
      chunk.writeUInt32BE(i, 0);
      hash.update(chunk);
      produced += chunk.length;
      yield chunk;
    }
  }
  return { stream: Readable.from(chunks(), { objectMode: false }), sha256: () => hash.digest("hex") };
}

async function keysOf(storage: S3Storage, prefix = ""): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of storage.list(prefix)) keys.push(o.key);
  return keys.sort();
}

describe("s3() against a real S3-protocol server", () => {
  it("puts (string, bytes, stream), gets, stats, lists relative keys and deletes", async () => {
    const s = store({}, "basic/prefix");
    const neighbour = store({}, "basic/prefix-other"); // shares the string prefix "basic/prefix"
    await neighbour.put("a/leak.txt", "must not be listed");
    await s.put("a/one.txt", "1");
    await s.put("a/b/two.bin", new Uint8Array([1, 2, 3, 4]));
    await s.put("c.txt", Readable.from([Buffer.from("33"), Buffer.from("3")]));
    await s.put("empty", "");
    await s.put("odd keys/with space+plus/ünïcødé%20#?.txt", "odd");
    expect((await readAll(await s.get("odd keys/with space+plus/ünïcødé%20#?.txt"))).toString()).toBe("odd");
    expect(await keysOf(s, "odd keys/")).toEqual(["odd keys/with space+plus/ünïcødé%20#?.txt"]);
    await s.delete("odd keys/with space+plus/ünïcødé%20#?.txt");

    expect((await readAll(await s.get("a/one.txt"))).toString()).toBe("1");
    expect([...(await readAll(await s.get("a/b/two.bin")))]).toEqual([1, 2, 3, 4]);
    expect((await readAll(await s.get("c.txt"))).toString()).toBe("333");
    expect((await readAll(await s.get("empty"))).length).toBe(0);

    const info = await s.stat("c.txt");
    expect(info).toMatchObject({ key: "c.txt", size: 3, etag: createHash("md5").update("333").digest("hex") });
    expect(info?.modifiedAt).toBeInstanceOf(Date);
    expect(await s.stat("missing.txt")).toBeUndefined();
    await expect(s.get("missing.txt")).rejects.toMatchObject({ code: "NOT_FOUND" });

    expect(await keysOf(s)).toEqual(["a/b/two.bin", "a/one.txt", "c.txt", "empty"]);
    expect(await keysOf(s, "a/")).toEqual(["a/b/two.bin", "a/one.txt"]);
    expect(await keysOf(s, "a/o")).toEqual(["a/one.txt"]);
    const listed = [];
    for await (const o of s.list("a/b/")) listed.push(o);
    expect(listed).toEqual([expect.objectContaining({ key: "a/b/two.bin", size: 4, etag: createHash("md5").update(Buffer.from([1, 2, 3, 4])).digest("hex") })]);

    // Overwrite: readers see the whole new object.
    await s.put("a/one.txt", "uno");
    expect((await readAll(await s.get("a/one.txt"))).toString()).toBe("uno");

    await s.delete(["a/one.txt", "a/b/two.bin", "never-existed"]);
    await s.delete("empty");
    expect(await keysOf(s)).toEqual(["c.txt"]);
    expect(await keysOf(neighbour)).toEqual(["a/leak.txt"]);
  });

  it("a storage at the bucket root uses keys as they are", async () => {
    const root = s3(`s3://${BUCKET}`, { endpoint: server.endpoint, ...S3RVER_CLIENT_SETTINGS, credentials: TEST_AWS_CREDENTIALS });
    const nested = store({}, "rooted");
    await nested.put("x.txt", "x");
    expect(await keysOf(root, "rooted/")).toEqual(["rooted/x.txt"]);
    expect((await readAll(await root.get("rooted/x.txt"))).toString()).toBe("x");
  });

  it("lists past 1,000 objects (pagination) and deletes them in batches", async () => {
    const s = store();
    const keys = Array.from({ length: 1100 }, (_, i) => `many/${String(i).padStart(4, "0")}.txt`);
    let next = 0;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < keys.length) {
          const key = keys[next++]!;
          await s.put(key, key);
        }
      }),
    );
    const listed = await keysOf(s, "many/");
    expect(listed).toHaveLength(1100);
    expect(listed).toEqual(keys);
    await s.delete(keys.slice(0, 1050));
    expect(await keysOf(s, "many/")).toEqual(keys.slice(1050));
    await s.delete(keys); // the 1,050 already gone are no error
    expect(await keysOf(s)).toEqual([]);
  });

  it("uploads 20 MB as a multipart upload with 5 MiB parts; the download's sha256 matches", async () => {
    const s = store({ partSizeBytes: 5 * MiB, queueSize: 2 });
    const source = generated(20 * 1000 * 1000 + 123);
    await s.put("big/model.bin", source.stream);
    expect((await s.stat("big/model.bin"))?.size).toBe(20 * 1000 * 1000 + 123);
    expect(await sha256Of(await s.get("big/model.bin"))).toEqual({ sha256: source.sha256(), bytes: 20 * 1000 * 1000 + 123 });

    // A byte array larger than a part goes up in parts too (without copying it).
    const bytes = randomBytes(11 * MiB);
    await s.put("big/bytes.bin", bytes);
    expect((await readAll(await s.get("big/bytes.bin"))).equals(bytes)).toBe(true);
  });

  it("streams a 200 MB object up and down with bounded memory", async () => {
    const total = 200 * MiB;
    const s = store({ partSizeBytes: 5 * MiB, queueSize: 4 });
    global.gc?.();
    const base = process.memoryUsage();
    let peakRss = base.rss;
    let peakHeapPlusBuffers = 0;
    const sampler = setInterval(() => {
      const m = process.memoryUsage();
      peakRss = Math.max(peakRss, m.rss);
      peakHeapPlusBuffers = Math.max(peakHeapPlusBuffers, m.heapUsed + m.arrayBuffers);
    }, 5);
    try {
      const source = generated(total);
      const up = Date.now();
      await s.put("huge.bin", source.stream);
      const upMs = Date.now() - up;
      const down = Date.now();
      const got = await sha256Of(await s.get("huge.bin"));
      const downMs = Date.now() - down;
      expect(got).toEqual({ sha256: source.sha256(), bytes: total });
      const growthMb = (peakRss - base.rss) / MiB;
      const heapMb = (peakHeapPlusBuffers - base.heapUsed - base.arrayBuffers) / MiB;
      console.log(`200 MiB: up ${upMs} ms, down ${downMs} ms; peak RSS growth ${growthMb.toFixed(0)} MiB, peak heap+buffers growth ${heapMb.toFixed(0)} MiB`);
      // Buffering the object would need >= 200 MiB; the bound is ~partSize × (queueSize + 1) = 25 MiB
      // plus sockets and garbage not yet collected. Generous.
      expect(growthMb).toBeLessThan(150);
      expect(heapMb).toBeLessThan(150);
    } finally {
      clearInterval(sampler);
      await s.delete("huge.bin");
    }
  });

  it("downloads to a file: parallel ranges at their offsets, renamed into place once complete", async () => {
    const s = store({ partSizeBytes: 5 * MiB, queueSize: 3 });
    const dir = tempDir("s3-download");
    const big = randomBytes(23 * MiB + 4321);
    await s.put("dl/model.bin", big);
    await s.put("dl/small.json", '{"w":1}');
    await s.put("dl/empty", "");
    // Parent folders are created; the result names the key and its size.
    await expect(s.download("dl/model.bin", join(dir, "sub", "model.bin"))).resolves.toMatchObject({ key: "dl/model.bin", size: big.length });
    expect(readFileSync(join(dir, "sub", "model.bin")).equals(big)).toBe(true);
    await s.download("dl/small.json", join(dir, "small.json"));
    expect(readFileSync(join(dir, "small.json"), "utf8")).toBe('{"w":1}');
    await expect(s.download("dl/empty", join(dir, "empty"))).resolves.toMatchObject({ size: 0 });
    expect(readFileSync(join(dir, "empty")).length).toBe(0);
    // Over an existing file: replaced whole.
    await s.download("dl/small.json", join(dir, "sub", "model.bin"));
    expect(readFileSync(join(dir, "sub", "model.bin"), "utf8")).toBe('{"w":1}');
    expect(readdirSync(dir).sort()).toEqual(["empty", "small.json", "sub"]);
    expect(readdirSync(join(dir, "sub"))).toEqual(["model.bin"]);
  });

  it("a download that fails or is aborted leaves the old file as it was and nothing beside it", async () => {
    const s = store({ partSizeBytes: 5 * MiB, queueSize: 2 });
    const dir = tempDir("s3-download");
    const path = join(dir, "model.bin");
    writeFileSync(path, "old");
    await s.put("dl/big.bin", randomBytes(60 * MiB));

    expect(await caught(s.download("dl/missing.bin", path))).toMatchObject({ code: "NOT_FOUND" });
    expect(await caught(s.download("../escape", path))).toMatchObject({ code: "INVALID_STORAGE_KEY" });
    for (const bad of ["", `${dir}/`, `${path}\0x`]) expect(await caught(s.download("dl/big.bin", bad))).toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(readdirSync(dir)).toEqual(["model.bin"]);

    const controller = new AbortController();
    // Abort once the temporary file beside the target holds some of the object.
    const watcher = setInterval(() => {
      const tmp = readdirSync(dir).find((n) => n.startsWith(".model.bin.runctl-"));
      if (tmp && statSync(join(dir, tmp), { throwIfNoEntry: false })?.size) controller.abort();
    }, 1);
    try {
      const err = await caught(s.download("dl/big.bin", path, { signal: controller.signal }));
      expect(controller.signal.aborted).toBe(true);
      expect(err.code).toBe("ABORTED");
    } finally {
      clearInterval(watcher);
    }
    expect(readFileSync(path, "utf8")).toBe("old");
    expect(readdirSync(dir)).toEqual(["model.bin"]);
  });

  it("a download SIGKILLed mid-way leaves the old file whole and only its dot-file beside it, which the next download sweeps", async () => {
    const prefix = `t${++counter}`;
    const s = store({ partSizeBytes: 5 * MiB, queueSize: 2 }, prefix);
    const dir = tempDir("s3-download");
    const path = join(dir, "model.bin");
    writeFileSync(path, "old");
    const data = randomBytes(60 * MiB);
    await s.put("dl/killed.bin", data);
    // Another process downloads; it is killed once its temporary file holds 8 MiB.
    const code = `import { s3 } from "./src/storage/s3/index.ts";
      const [uri, options, path] = JSON.parse(process.argv[1]);
      await s3(uri, options).download("dl/killed.bin", path);`;
    const options = { endpoint: server.endpoint, ...S3RVER_CLIENT_SETTINGS, credentials: TEST_AWS_CREDENTIALS, partSizeBytes: 5 * MiB, queueSize: 2 };
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code, JSON.stringify([`s3://${BUCKET}/${prefix}`, options, path])], {
      cwd: REPO_ROOT,
      stdio: "ignore",
    });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once("exit", (_code, signal) => resolve(signal)));
    const tmpName = (): string | undefined => readdirSync(dir).find((n) => n.startsWith(".model.bin.runctl-"));
    const deadline = Date.now() + 60_000;
    while (!((statSync(join(dir, tmpName() ?? "none"), { throwIfNoEntry: false })?.size ?? 0) > 8 * MiB) && Date.now() < deadline && child.exitCode === null) await sleep(1);
    child.kill("SIGKILL");
    expect(await exited).toBe("SIGKILL");
    expect(readFileSync(path, "utf8")).toBe("old");
    const [left, target, ...more] = readdirSync(dir).sort();
    expect([target, more]).toEqual(["model.bin", []]);
    expect(left).toMatch(new RegExp(`^\\.model\\.bin\\.runctl-[0-9a-f]{6}-${child.pid}-[0-9a-f]{8}$`));
    // The next download (another process: the killed one's pid is gone) replaces the file whole and removes the dot-file.
    await s.download("dl/killed.bin", path);
    expect(readFileSync(path).equals(data)).toBe(true);
    expect(readdirSync(dir)).toEqual(["model.bin"]);
  });

  it("a download the local file system refuses (the file size limit: EFBIG) is STORAGE_ERROR naming the file, not the server; the old file stays, nothing beside it", async () => {
    const prefix = `t${++counter}`;
    const s = store({ partSizeBytes: 5 * MiB, queueSize: 2 }, prefix);
    const dir = tempDir("s3-download");
    const path = join(dir, "model.bin");
    writeFileSync(path, "old");
    await s.put("dl/big.bin", randomBytes(20 * MiB));
    // The same download in a process whose files may not pass 4 MiB (dash's `ulimit -f` counts
    // 512-byte blocks; the kernel's RLIMIT_FSIZE fails writes beyond it with EFBIG, as a full disk
    // fails them with ENOSPC).
    const code = `import { s3 } from "./src/storage/s3/index.ts";
      const [uri, options, path] = JSON.parse(process.argv[1]);
      try { await s3(uri, options).download("dl/big.bin", path); console.log("no error"); }
      catch (err) { console.log(JSON.stringify({ code: err.code, message: err.message, details: err.details, retryable: err.retryable })); }`;
    const options = { endpoint: server.endpoint, ...S3RVER_CLIENT_SETTINGS, credentials: TEST_AWS_CREDENTIALS, partSizeBytes: 5 * MiB, queueSize: 2 };
    const args = [process.execPath, "--import", "tsx", "--input-type=module", "-e", code, JSON.stringify([`s3://${BUCKET}/${prefix}`, options, path])];
    const { stdout: out } = await promisify(execFile)("sh", ["-c", 'ulimit -f 8192 && exec "$@"', "sh", ...args], { cwd: REPO_ROOT, encoding: "utf8" });
    const err = JSON.parse(out.trim().split("\n").pop()!) as { code: string; message: string; details: Record<string, unknown>; retryable: boolean };
    expect(err).toMatchObject({ code: "STORAGE_ERROR", retryable: false, details: { errno: "EFBIG" } });
    expect(err.message.startsWith(`Writing ${path} failed: EFBIG`)).toBe(true);
    expect(err.details["awsCode"]).toBeUndefined();
    expect(readFileSync(path, "utf8")).toBe("old");
    expect(readdirSync(dir)).toEqual(["model.bin"]);
  });

  it("downloadToFile streams a storage without its own download, just as atomically", async () => {
    const root = tempDir("local-store");
    const local = localDir(root);
    const dir = tempDir("local-download");
    const bytes = randomBytes(3 * MiB + 5);
    await local.put("a/b.bin", bytes);
    await expect(downloadToFile(local, "a/b.bin", join(dir, "b.bin"))).resolves.toEqual({ key: "a/b.bin", size: bytes.length });
    expect(readFileSync(join(dir, "b.bin")).equals(bytes)).toBe(true);
    expect(await caught(downloadToFile(local, "a/none.bin", join(dir, "b.bin")))).toMatchObject({ code: "NOT_FOUND" });
    expect(await caught(downloadToFile(local, "../a/b.bin", join(dir, "c.bin")))).toMatchObject({ code: "INVALID_STORAGE_KEY" });
    expect(await caught(downloadToFile(local, "a/b.bin", ""))).toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(readFileSync(join(dir, "b.bin")).equals(bytes)).toBe(true);
    expect(readdirSync(dir)).toEqual(["b.bin"]);
    // An S3 storage goes through its own download.
    const s = store({ partSizeBytes: 5 * MiB });
    await s.put("x.bin", bytes);
    await downloadToFile(s, "x.bin", join(dir, "x.bin"));
    expect(readFileSync(join(dir, "x.bin")).equals(bytes)).toBe(true);
  });

  it("validates keys before sending anything", async () => {
    const s = store();
    for (const key of ["../escape", "/abs", "a//b", "a/../b", ""]) {
      await expect(s.put(key, "x")).rejects.toMatchObject({ code: "INVALID_STORAGE_KEY" });
      await expect(s.get(key)).rejects.toMatchObject({ code: "INVALID_STORAGE_KEY" });
    }
    await expect(keysOf(s, "../")).rejects.toMatchObject({ code: "INVALID_STORAGE_KEY" });
    expect(() => s3("s3://Not_A_Bucket/x", { endpoint: server.endpoint })).toThrowError(expect.objectContaining({ code: "INVALID_URI" }) as Error);
    expect(() => s3(`s3://${BUCKET}/a/../b`, { endpoint: server.endpoint })).toThrowError(expect.objectContaining({ code: "INVALID_URI" }) as Error);
  });

  it("a missing bucket is a non-retryable STORAGE_ERROR naming it", async () => {
    const s = s3("s3://no-such-bucket-here/p", { endpoint: server.endpoint, ...S3RVER_CLIENT_SETTINGS, credentials: TEST_AWS_CREDENTIALS });
    const err = await caught(s.put("a.txt", "x"));
    expect(err).toMatchObject({ code: "STORAGE_ERROR", retryable: false, details: { awsCode: "NoSuchBucket" } });
    expect(err.message).toContain("bucket no-such-bucket-here does not exist");
    const listErr = await caught(keysOf(s));
    expect(listErr.message).toContain("no-such-bucket-here");
  });

  it("aborts a streamed put, a get mid-body and a list", async () => {
    const s = store({ partSizeBytes: 5 * MiB, queueSize: 2 });
    // An endless slow source: only the signal can end this put.
    const controller = new AbortController();
    const endless = generated(Number.MAX_SAFE_INTEGER, () => sleep(2));
    setTimeout(() => controller.abort(), 300);
    const started = Date.now();
    const err = await caught(s.put("aborted.bin", endless.stream, { signal: controller.signal }));
    expect(err.code).toBe("ABORTED");
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(endless.stream.destroyed).toBe(true);
    expect(await s.stat("aborted.bin")).toBeUndefined();

    await s.put("body.bin", randomBytes(8 * MiB));
    const getController = new AbortController();
    const body = await s.get("body.bin", { signal: getController.signal });
    const reading = (async () => {
      for await (const _ of body) {
        getController.abort();
        await sleep(1);
      }
    })();
    await expect(reading).rejects.toMatchObject({ code: "ABORTED" });

    await expect(keysOf(store(), "")).resolves.toEqual([]);
    const listController = new AbortController();
    listController.abort();
    await expect((async () => {
      for await (const _ of s.list("", { signal: listController.signal })) void _;
    })()).rejects.toMatchObject({ code: "ABORTED" });
    await expect(s.put("x", "y", { signal: listController.signal })).rejects.toMatchObject({ code: "ABORTED" });
  });
});

describe("s3() when the server is killed and restarted", () => {
  /** Kills the server now and starts it again after `downMs`; `back` settles once it is up again. */
  async function outage(downMs: number): Promise<{ back: Promise<void> }> {
    await server.kill();
    return { back: sleep(downMs).then(() => server.restart()) };
  }

  it("a streamed multipart put rides out a restart within its retry budget", async () => {
    const s = store({ partSizeBytes: 5 * MiB, queueSize: 2 });
    let outageDone: Promise<void> | undefined;
    const source = generated(30 * MiB, async (produced) => {
      if (produced === 16 * MiB) outageDone = (await outage(1_000)).back;
      await sleep(2);
    });
    await s.put("restart/put.bin", source.stream);
    expect(outageDone).toBeDefined();
    await outageDone;
    expect(await sha256Of(await s.get("restart/put.bin"))).toEqual({ sha256: source.sha256(), bytes: 30 * MiB });
  });

  it("a get resumes the body where the dropped connection left it", async () => {
    const s = store();
    const data = randomBytes(40 * MiB);
    await s.put("restart/get.bin", data);
    const stream = await s.get("restart/get.bin");
    const hash = createHash("sha256");
    let bytes = 0;
    let outageDone: Promise<void> | undefined;
    for await (const chunk of stream) {
      hash.update(chunk as Buffer);
      bytes += (chunk as Buffer).length;
      if (!outageDone && bytes > 2 * MiB) outageDone = (await outage(700)).back;
    }
    await outageDone;
    expect(bytes).toBe(data.length);
    expect(hash.digest("hex")).toBe(createHash("sha256").update(data).digest("hex"));
    expect((stream as ResumingObjectStream | RangedObjectStream).resumeCount).toBeGreaterThanOrEqual(1);
  });

  it("a download to a file resumes its ranges where the dropped connections left them", async () => {
    const s = store({ partSizeBytes: 5 * MiB, queueSize: 2 });
    const dir = tempDir("s3-download");
    const data = randomBytes(60 * MiB);
    await s.put("restart/dl.bin", data);
    let outageDone: Promise<void> | undefined;
    // The server goes away once the temporary file holds 8 MiB of the object.
    const watcher = setInterval(() => {
      const tmp = readdirSync(dir).find((n) => n.startsWith(".dl.bin.runctl-"));
      if (!outageDone && tmp && (statSync(join(dir, tmp), { throwIfNoEntry: false })?.size ?? 0) > 8 * MiB) {
        outageDone = outage(700).then((o) => o.back);
      }
    }, 1);
    try {
      await s.download("restart/dl.bin", join(dir, "dl.bin"));
    } finally {
      clearInterval(watcher);
    }
    expect(outageDone).toBeDefined();
    await outageDone;
    expect(createHash("sha256").update(readFileSync(join(dir, "dl.bin"))).digest("hex")).toBe(createHash("sha256").update(data).digest("hex"));
    expect(readdirSync(dir)).toEqual(["dl.bin"]);
  });

  it("stat, list, small puts and deletes wait for a server that comes back", async () => {
    const s = store({ retry: { minDelayMs: 50, maxDelayMs: 250, maxElapsedMs: 30_000 } });
    await s.put("restart/a.txt", "a");
    let down = await outage(800);
    const started = Date.now();
    expect(await s.stat("restart/a.txt")).toMatchObject({ size: 1 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(700);
    await down.back;

    down = await outage(500);
    expect(await keysOf(s)).toEqual(["restart/a.txt"]);
    await down.back;

    down = await outage(500);
    await s.put("restart/b.txt", "b");
    await down.back;

    down = await outage(500);
    await s.delete(["restart/a.txt", "restart/b.txt"]);
    await down.back;
    expect(await keysOf(s)).toEqual([]);
  });

  it("fails with a retryable STORAGE_ERROR when the server stays down past the budget", async () => {
    const s = store({ retry: { retries: 50, minDelayMs: 50, maxDelayMs: 200, maxElapsedMs: 1_000 } });
    await s.put("down/a.txt", "a");
    await server.kill();
    try {
      for (const call of [() => s.put("down/b.txt", "b"), () => s.get("down/a.txt"), () => s.stat("down/a.txt"), () => keysOf(s), () => s.delete("down/a.txt")]) {
        const started = Date.now();
        const err = await caught(call());
        expect(Date.now() - started).toBeLessThan(4_000);
        expect(err).toMatchObject({ code: "STORAGE_ERROR", retryable: true, details: { bucket: BUCKET } });
        expect(err.details["attempts"]).toBeGreaterThan(1);
        expect(err.message).toContain("ECONNREFUSED");
        expect(err.message).toContain(`s3://${BUCKET}/`);
      }
    } finally {
      await server.restart();
    }
    expect((await readAll(await s.get("down/a.txt"))).toString()).toBe("a");
  });
});

describe("s3() machine descriptor and secrets", () => {
  it("describes the bucket for any machine and forwards the credentials", async () => {
    const s = store({ machineBackend: "boto3" }, "desc/runs");
    for (const sharesLocalFilesystem of [true, false]) {
      expect(s.machineDescriptor({ sharesLocalFilesystem })).toEqual({
        kind: "s3", bucket: BUCKET, prefix: "desc/runs", region: "us-east-1", endpoint: server.endpoint, forcePathStyle: true, checksums: "when_required", backend: "boto3",
      });
    }
    expect(await s.machineSecrets()).toEqual({ aws: { ...TEST_AWS_CREDENTIALS } });
    expect(await store({ forwardCredentials: false }).machineSecrets()).toBeUndefined();
  });
});

describe("checkpoint store over s3()", () => {
  /** The storage folder of commit `seq` of a checkpoint (docs/checkpoints.md). */
  const gen = (seq: number): string => `g${String(seq).padStart(8, "0")}`;

  /** Commits a checkpoint the way the agent does: files, then manifest.json, then LATEST. */
  async function commit(s: S3Storage, runId: string, name: string, seq: number, files: Record<string, string | Buffer>): Promise<void> {
    const entries = [];
    for (const [path, content] of Object.entries(files)) {
      const bytes = Buffer.from(content);
      await s.put(`${runId}/checkpoints/${name}/${gen(seq)}/files/${path}`, bytes.length > 1024 ? Readable.from([bytes]) : bytes);
      entries.push({ path, size: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") });
    }
    const manifest = { version: 1, runId, name, kind: "dir", step: seq * 10, seq, createdAt: new Date().toISOString(), hyperparamsHash: null, files: entries, totalBytes: entries.reduce((n, e) => n + e.size, 0) };
    await s.put(`${runId}/checkpoints/${name}/${gen(seq)}/manifest.json`, JSON.stringify(manifest));
    await s.put(`${runId}/LATEST`, name);
  }

  it("lists, verifies, downloads, falls back past corrupt objects and prunes", async () => {
    const s = store({}, "ckpt/runs");
    const weights = randomBytes(6 * MiB + 17);
    await commit(s, "r1", "step-1", 1, { "model.json": '{"w":1}' });
    await commit(s, "r1", "step-2", 2, { "model.json": '{"w":2}', "sub/opt.json": "{}", "weights.bin": weights });
    // Half-written: files but no manifest, and LATEST already pointing at it. Readers must not see it.
    await s.put("r1/checkpoints/step-3/g00000003/files/model.json", "partial");
    await s.put("r1/LATEST", "step-3");

    const ckpts = checkpointStore(s, "r1");
    expect((await ckpts.list()).map((c) => c.name)).toEqual(["step-1", "step-2"]);
    const latest = await ckpts.latest();
    expect(latest?.name).toBe("step-2");
    expect(await latest!.verify()).toEqual({ ok: true, problems: [] });
    const dest = tempDir("s3-ckpt-dl");
    await latest!.download(dest);
    expect(readFileSync(join(dest, "sub", "opt.json"), "utf8")).toBe("{}");
    expect(readFileSync(join(dest, "weights.bin")).equals(weights)).toBe(true);

    // Corrupt step-2 behind the manifest's back: verify reports it, downloadLatest falls back.
    await s.put("r1/checkpoints/step-2/g00000002/files/model.json", '{"w":9}');
    expect((await latest!.verify()).problems).toEqual([{ path: "model.json", reason: "sha256 differs" }]);
    const fallback = await ckpts.downloadLatest(tempDir("s3-ckpt-fb"));
    expect(fallback.checkpoint.name).toBe("step-1");
    expect(fallback.skipped).toEqual(["step-2"]);

    // A corrupt manifest is reported as such.
    await s.put("r1/checkpoints/step-2/g00000002/manifest.json", "{not json");
    await expect(ckpts.get("step-2")).rejects.toMatchObject({ code: "CHECKPOINT_CORRUPT" });

    // Prune keeps the newest committed one and removes everything of the older ones.
    await commit(s, "r1", "step-4", 4, { "model.json": '{"w":4}' });
    await s.delete("r1/checkpoints/step-2/g00000002/manifest.json");
    expect(await ckpts.prune({ keep: 1 })).toEqual(["step-1"]);
    expect((await ckpts.list()).map((c) => c.name)).toEqual(["step-4"]);
    expect(await keysOf(s, "r1/checkpoints/step-1/")).toEqual([]);
  });

  it("a checkpoint with a missing file fails verification", async () => {
    const s = store({}, "ckpt/missing");
    await commit(s, "r2", "step-1", 1, { "model.json": '{"w":1}' });
    await commit(s, "r2", "step-2", 2, { "model.json": '{"w":2}', "extra.json": "{}" });
    await s.delete("r2/checkpoints/step-2/g00000002/files/extra.json");
    const latest = await checkpointStore(s, "r2").latest();
    expect(latest?.name).toBe("step-2");
    expect(await latest!.verify()).toEqual({ ok: false, problems: [{ path: "extra.json", reason: "missing" }] });
    // What a download of it reports: the missing object, by its full S3 key.
    await expect(latest!.download(tempDir("s3-ckpt-missing"))).rejects.toMatchObject({ message: expect.stringContaining("r2/checkpoints/step-2/g00000002/files/extra.json") as string });
  });
});
