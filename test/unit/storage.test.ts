import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { RunctlError, checkpointStore, localDir, validateStorageKey } from "runctl";
import { tempDir } from "../support/temp-home.js";

async function text(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks).toString("utf8");
}

describe("storage keys", () => {
  it.each(["../x", "/abs", "a/../b", "a//b", "", "a\\b", "a/./b", "x\0y"])("refuses %j", (key) => {
    expect(() => validateStorageKey(key)).toThrowError(RunctlError);
  });
  it("accepts nested keys and list prefixes", () => {
    expect(validateStorageKey("run/checkpoints/step-1/files/model.pt")).toBe("run/checkpoints/step-1/files/model.pt");
    expect(validateStorageKey("run/", { allowPrefix: true })).toBe("run/");
  });
});

describe("localDir storage", () => {
  it("puts, gets, stats, lists by prefix and deletes", async () => {
    const root = tempDir("store");
    const s = localDir(root);
    await s.put("a/one.txt", "1");
    await s.put("a/b/two.txt", Buffer.from("22"));
    await s.put("c.txt", Readable.from([Buffer.from("333")]));
    expect(await text(await s.get("a/b/two.txt"))).toBe("22");
    expect((await s.stat("c.txt"))?.size).toBe(3);
    expect(await s.stat("missing")).toBeUndefined();
    const listed: string[] = [];
    for await (const o of s.list("a/")) listed.push(o.key);
    expect(listed.sort()).toEqual(["a/b/two.txt", "a/one.txt"]);
    await s.delete(["a/one.txt", "a/b/two.txt", "never"]);
    expect(readdirSync(root)).toEqual(["c.txt"]);
    await expect(s.get("a/one.txt")).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(s.put("../escape", "x")).rejects.toMatchObject({ code: "INVALID_STORAGE_KEY" });
  });
});

/** Writes a committed checkpoint the way the agent does (files, then manifest, then LATEST). */
function commit(root: string, runId: string, name: string, seq: number, files: Record<string, string>): void {
  const base = join(root, runId, "checkpoints", name, `g${String(seq).padStart(8, "0")}`);
  const entries = Object.entries(files).map(([path, content]) => {
    mkdirSync(join(base, "files", path, ".."), { recursive: true });
    writeFileSync(join(base, "files", path), content);
    return { path, size: Buffer.byteLength(content), sha256: createHash("sha256").update(content).digest("hex") };
  });
  const manifest = { version: 1, runId, name, kind: "dir", step: seq * 10, seq, createdAt: new Date().toISOString(), hyperparamsHash: null, files: entries, totalBytes: entries.reduce((n, e) => n + e.size, 0) };
  writeFileSync(join(base, "manifest.json"), JSON.stringify(manifest));
  writeFileSync(join(root, runId, "LATEST"), name);
}

describe("checkpoint store", () => {
  it("lists committed checkpoints only, verifies bytes, falls back past a corrupt one, prunes", async () => {
    const root = tempDir("ckpt");
    commit(root, "r1", "step-1", 1, { "model.json": "{\"w\":1}" });
    commit(root, "r1", "step-2", 2, { "model.json": "{\"w\":2}", "sub/opt.json": "{}" });
    // A half-written checkpoint: files but no manifest. It must not exist to readers.
    mkdirSync(join(root, "r1", "checkpoints", "step-3", "g00000003", "files"), { recursive: true });
    writeFileSync(join(root, "r1", "checkpoints", "step-3", "g00000003", "files", "model.json"), "partial");
    writeFileSync(join(root, "r1", "LATEST"), "step-3");

    const store = checkpointStore(localDir(root), "r1");
    expect((await store.list()).map((c) => c.name)).toEqual(["step-1", "step-2"]);
    const latest = await store.latest();
    expect(latest?.name).toBe("step-2");
    expect((await latest!.verify()).ok).toBe(true);

    const dest = tempDir("dl");
    await latest!.download(dest);
    expect(readFileSync(join(dest, "sub", "opt.json"), "utf8")).toBe("{}");

    // Corrupt step-2 behind the manifest's back: download refuses it and downloadLatest falls back.
    writeFileSync(join(root, "r1", "checkpoints", "step-2", "g00000002", "files", "model.json"), "{\"w\":9}");
    const verification = await latest!.verify();
    expect(verification.ok).toBe(false);
    expect(verification.problems).toEqual([{ path: "model.json", reason: "sha256 differs" }]);
    const dest2 = tempDir("dl2");
    await expect(latest!.download(dest2)).rejects.toMatchObject({ code: "CHECKPOINT_CORRUPT" });
    expect(readdirSync(dest2).filter((f) => f !== "sub")).toEqual([]);
    const used = await store.downloadLatest(tempDir("dl3"));
    expect(used.checkpoint.name).toBe("step-1");
    expect(used.skipped).toEqual(["step-2"]);

    // A file the manifest lists but storage lacks: also corrupt, also skipped.
    rmSync(join(root, "r1", "checkpoints", "step-1", "g00000001", "files", "model.json"));
    await expect(store.downloadLatest(tempDir("dl4"))).rejects.toMatchObject({ code: "CHECKPOINT_NOT_FOUND" });
    expect(await store.prune({ keep: 1 })).toEqual(["step-1"]);
    expect((await store.list()).map((c) => c.name)).toEqual(["step-2"]);
  });
});
