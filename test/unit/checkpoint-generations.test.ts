/**
 * The client's checkpoint reader over the generation layout (docs/checkpoints.md), against localDir()
 * and a real S3 server (s3rver): a generation without a manifest does not exist, the highest committed
 * generation of a name wins, and a checkpoint pruned while `downloadLatest` reads it is not corruption.
 */
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { checkpointStore } from "../../src/checkpoints/index.js";
import { checkpointKeys } from "../../src/checkpoints/manifest.js";
import { tempFileName } from "../../src/storage/download-to-file.js";
import { localDir } from "../../src/storage/local-dir/index.js";
import { s3 } from "../../src/storage/s3/index.js";
import type { Storage } from "../../src/storage/types.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS } from "../support/s3-server.js";
import { useS3Server } from "../support/use-s3-server.js";
import { tempDir } from "../support/temp-home.js";
import { caught } from "../support/caught.js";

const BUCKET = "runctl-ckpt-generations";
const server = useS3Server({ buckets: [BUCKET] });
let counter = 0;

const backends: Array<[string, () => Storage]> = [
  ["localDir", () => localDir(tempDir("ckpt-gen"))],
  ["s3", () => s3(`s3://${BUCKET}/t${++counter}`, { endpoint: server.endpoint, ...S3RVER_CLIENT_SETTINGS, credentials: TEST_AWS_CREDENTIALS })],
];

/** Uploads a checkpoint's files as the agent does; `manifest: false` stops before the manifest (a crash). */
async function commit(s: Storage, runId: string, name: string, seq: number, files: Record<string, string>, options: { manifest?: boolean } = {}): Promise<void> {
  const entries = [];
  for (const [path, content] of Object.entries(files)) {
    await s.put(checkpointKeys.file(runId, name, seq, path), content);
    entries.push({ path, size: Buffer.byteLength(content), sha256: createHash("sha256").update(content).digest("hex") });
  }
  if (options.manifest === false) return;
  const manifest = { version: 1, runId, name, kind: "dir", step: seq * 10, seq, createdAt: new Date().toISOString(), hyperparamsHash: null, files: entries, totalBytes: entries.reduce((n, e) => n + e.size, 0) };
  await s.put(checkpointKeys.manifest(runId, name, seq), JSON.stringify(manifest));
  await s.put(checkpointKeys.latest(runId), name);
}

/** `storage`, with `before` run once, just before the first read (get or download) of a key that `when` picks. */
function withHook(storage: Storage, when: (key: string) => boolean, before: () => Promise<void>): Storage {
  let fired = false;
  const hook = async (key: string): Promise<void> => {
    if (!fired && when(key)) {
      fired = true;
      await before();
    }
  };
  return new Proxy(storage, {
    get(target, prop, receiver) {
      if (prop === "get") {
        return async (key: string, options?: Parameters<Storage["get"]>[1]) => (await hook(key), target.get(key, options));
      }
      if (prop === "download" && target.download) {
        const download = target.download.bind(target);
        return async (key: string, path: string, options?: Parameters<Storage["get"]>[1]) => (await hook(key), download(key, path, options));
      }
      return Reflect.get(target, prop, receiver) as unknown;
    },
  });
}

describe.each(backends)("checkpoint generations over %s", (_label, make) => {
  it("a manifest cut short (the agent died writing it; s3rver keeps the bytes) hides only that generation, never every checkpoint", async () => {
    const s = make();
    const store = checkpointStore(s, "r0");
    await commit(s, "r0", "step-1", 1, { "w.json": '{"w":1}' });
    await commit(s, "r0", "last.pt", 2, { "w.json": '{"w":2}' });
    await commit(s, "r0", "last.pt", 3, { "w.json": '{"w":3}' }, { manifest: false });
    await s.put(checkpointKeys.manifest("r0", "last.pt", 3), '{"version":1,"runId":"r0","name":"last.pt","ki');
    // Before: list() and latest() threw CHECKPOINT_CORRUPT for the whole run.
    expect((await store.list()).map((c) => [c.name, c.seq])).toEqual([["step-1", 1], ["last.pt", 2]]);
    const latest = await store.latest();
    expect(latest).toMatchObject({ name: "last.pt", seq: 2 });
    expect(await latest!.verify()).toEqual({ ok: true, problems: [] });
  });

  it("a rewrite's generation without a manifest does not exist; once its manifest is written it wins; prune removes every generation", async () => {
    const s = make();
    const store = checkpointStore(s, "r1");
    await commit(s, "r1", "step-1", 1, { "w.json": '{"w":1}' });
    await commit(s, "r1", "last.pt", 2, { "w.json": '{"w":2}' });
    // The agent died while it uploaded the next version of last.pt: files of g3, no manifest.
    await commit(s, "r1", "last.pt", 3, { "w.json": '{"w":3, "partial' }, { manifest: false });
    const latest = await store.latest();
    expect(latest).toMatchObject({ name: "last.pt", seq: 2 });
    expect(await latest!.verify()).toEqual({ ok: true, problems: [] });
    expect((await store.list()).map((c) => [c.name, c.seq])).toEqual([["step-1", 1], ["last.pt", 2]]);
    const dest = tempDir("ckpt-gen-dl");
    await latest!.download(dest);
    expect(readFileSync(join(dest, "w.json"), "utf8")).toBe('{"w":2}');

    // The next commit of last.pt completes (g4) before the old generations are gone: the highest wins.
    await commit(s, "r1", "last.pt", 4, { "w.json": '{"w":4}' });
    expect((await store.get("last.pt"))?.seq).toBe(4);
    expect((await store.list()).map((c) => [c.name, c.seq])).toEqual([["step-1", 1], ["last.pt", 4]]);
    expect(await (await store.latest())!.verify()).toEqual({ ok: true, problems: [] });

    expect(await store.prune({ keep: 1 })).toEqual(["step-1"]);
    const left: string[] = [];
    for await (const o of s.list(checkpointKeys.checkpointsPrefix("r1"))) left.push(o.key);
    expect(left.some((k) => k.includes("/step-1/"))).toBe(false);
    expect((await store.list()).map((c) => c.name)).toEqual(["last.pt"]);
  });

  it("keep 1: the checkpoint downloadLatest listed is pruned while it downloads: it takes the newer one, nothing reads as corrupt", async () => {
    const base = make();
    await commit(base, "r2", "step-2", 2, { "a.json": '{"a":2}', "b.json": '{"b":2}' });
    // A concurrent run commits step-3 and prunes to keep 1 just as the first file of step-2 is read.
    const hooked = withHook(base, (k) => k === checkpointKeys.file("r2", "step-2", 2, "a.json"), async () => {
      await commit(base, "r2", "step-3", 3, { "a.json": '{"a":3}', "b.json": '{"b":3}' });
      expect(await checkpointStore(base, "r2").prune({ keep: 1 })).toEqual(["step-2"]);
    });
    const dest = tempDir("ckpt-gen-prune");
    const used = await checkpointStore(hooked, "r2").downloadLatest(dest);
    expect(used.checkpoint).toMatchObject({ name: "step-3", seq: 3 });
    expect(used.skipped).toEqual([]);
    expect(readFileSync(join(dest, "b.json"), "utf8")).toBe('{"b":3}');
  });

  it("a Checkpoint from latest() pruned before its download: CHECKPOINT_NOT_FOUND (vanished), not CHECKPOINT_CORRUPT; a real mismatch is still corrupt", async () => {
    const s = make();
    await commit(s, "r3", "step-1", 1, { "a.json": '{"a":1}' });
    const store = checkpointStore(s, "r3");
    const latest = (await store.latest())!;
    await commit(s, "r3", "step-2", 2, { "a.json": '{"a":2}' });
    await store.prune({ keep: 1 });
    const err = await caught(latest.download(tempDir("ckpt-gen-gone")));
    expect(err).toMatchObject({ code: "CHECKPOINT_NOT_FOUND", details: { name: "step-1", seq: 1, vanished: true } });

    // Same size, other bytes, manifest still there: corruption, and downloadLatest has nothing else.
    await s.put(checkpointKeys.file("r3", "step-2", 2, "a.json"), '{"a":9}');
    await expect((await store.latest())!.download(tempDir("ckpt-gen-bad"))).rejects.toMatchObject({ code: "CHECKPOINT_CORRUPT" });
    await expect(store.downloadLatest(tempDir("ckpt-gen-bad2"))).rejects.toMatchObject({ code: "CHECKPOINT_NOT_FOUND", message: expect.stringContaining("corrupt: step-2") as string });
  });

  it("a download writes each file under a hidden name and renames it once verified: a killed restore's leftovers are swept, a corrupt file leaves nothing", async () => {
    const s = make();
    await commit(s, "r4", "step-1", 1, { "w.json": '{"w":1}', "sub/x.bin": "x".repeat(5000) });
    const dest = tempDir("ckpt-gen-sweep");
    // What a restore SIGKILLed mid-file leaves: its hidden file, named with this host and a pid that has ended.
    const deadPid = spawnSync("true").pid!;
    const leftover = tempFileName(join(dest, "w.json")).replace(`-${process.pid}-`, `-${deadPid}-`);
    writeFileSync(join(dest, leftover), '{"w":');
    const used = await checkpointStore(s, "r4").downloadLatest(dest);
    expect(used.checkpoint).toMatchObject({ name: "step-1", seq: 1 });
    expect(readdirSync(dest).sort()).toEqual(["sub", "w.json"]);
    expect(readdirSync(join(dest, "sub"))).toEqual(["x.bin"]);
    expect(readFileSync(join(dest, "w.json"), "utf8")).toBe('{"w":1}');

    // Same size, other bytes: CHECKPOINT_CORRUPT, and neither the file nor a hidden one is left.
    await s.put(checkpointKeys.file("r4", "step-1", 1, "sub/x.bin"), "y".repeat(5000));
    const bad = tempDir("ckpt-gen-corrupt");
    expect(await caught((await checkpointStore(s, "r4").latest())!.download(bad))).toMatchObject({ code: "CHECKPOINT_CORRUPT", details: { path: "sub/x.bin" } });
    expect(readdirSync(bad, { recursive: true })).toEqual(["sub"]);
  });
});
