import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import tar from "tar-stream";
import { afterEach, describe, expect, it } from "vitest";
import { buildManifest } from "../../src/sync/manifest.js";
import { CONTROL_MEMBER_NAME, EXPECT_MEMBER_NAME, packSyncTar, type SyncControl } from "../../src/sync/tar-pack.js";

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function tree(files: Record<string, string | Buffer>): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "runctl-tar-"));
  dirs.push(root);
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), content);
  }
  return root;
}

interface Member {
  name: string;
  mode: number | undefined;
  type: string | null | undefined;
  data: Buffer;
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Parses tar bytes; returns the complete members and the parse error, if any. */
async function members(bytes: Buffer): Promise<{ members: Member[]; error?: Error }> {
  const extract = tar.extract();
  const out: Member[] = [];
  const done = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      out.push({ name: entry.header.name, mode: entry.header.mode, type: entry.header.type, data: Buffer.concat(chunks) });
    }
  })();
  extract.end(bytes);
  try {
    await done;
    return { members: out };
  } catch (error) {
    return { members: out, error: error as Error };
  }
}

const sha = (data: string | Buffer): string => createHash("sha256").update(data).digest("hex");

describe("packSyncTar", () => {
  it("starts with the control member, then the changed files with their modes", async () => {
    const longName = `deep/${"x".repeat(120)}/${"y".repeat(90)}.py`;
    const root = await tree({ "a.py": "print('a')\n", "run.sh": "#!/bin/sh\n", "unchanged.txt": "same", "ünï cødé.py": "u", [longName]: "long", "empty": "" });
    await chmod(join(root, "run.sh"), 0o755);
    const manifest = await buildManifest(root);
    const upload = ["a.py", "empty", longName, "run.sh", "ünï cødé.py"];
    const { stream, done } = packSyncTar({ root, entries: manifest.entries, upload, delete: ["old.py", "gone/x.txt"] });
    const parsed = await members(await collect(stream));
    expect(await done).toMatchObject({ files: 5, bytes: 11 + 0 + 4 + 10 + 1, entries: manifest.entries });
    expect(parsed.error).toBeUndefined();
    expect(parsed.members.map((m) => m.name)).toEqual([CONTROL_MEMBER_NAME, ...upload]);

    const control = JSON.parse(parsed.members[0]?.data.toString("utf8") ?? "") as SyncControl;
    expect(control.delete).toEqual(["old.py", "gone/x.txt"]);
    expect(control.expectTrailer).toBeUndefined();
    expect(Object.keys(control.expect ?? {}).sort()).toEqual(manifest.entries.map((e) => e.path).sort());
    expect(control.expect?.["unchanged.txt"]).toEqual({ size: 4, mode: manifest.entries.find((e) => e.path === "unchanged.txt")?.mode, sha256: sha("same") });

    const byName = new Map(parsed.members.map((m) => [m.name, m]));
    expect(byName.get("run.sh")?.mode).toBe(0o755);
    expect(byName.get("run.sh")?.type).toBe("file");
    expect(byName.get("a.py")?.data.toString()).toBe("print('a')\n");
    expect(byName.get(longName)?.data.toString()).toBe("long");
    expect(byName.get("ünï cødé.py")?.data.toString()).toBe("u");
    expect(byName.has("unchanged.txt")).toBe(false);
  });

  it("writes paths ustar cannot hold in a pax header, which tar-stream and the agent's reader both read", async () => {
    const paxPath = `${"d".repeat(150)}/${"é".repeat(60)}/f.py`; // no prefix/name split fits
    const split = `${"p/".repeat(60)}q.py`; // 124 bytes: ustar prefix + name
    const root = await tree({ [paxPath]: "pax", [split]: "split", "a.py": Buffer.alloc(1000, 7) });
    const manifest = await buildManifest(root);
    const { stream, done } = packSyncTar({ root, entries: manifest.entries });
    const bytes = await collect(stream);
    await done;
    expect(bytes.length % 512).toBe(0);
    const parsed = await members(bytes);
    expect(parsed.error).toBeUndefined();
    const byName = new Map(parsed.members.map((m) => [m.name, m.data.toString()]));
    expect(byName.get(paxPath)).toBe("pax");
    expect(byName.get(split)).toBe("split");
    expect(byName.get("a.py")).toBe(Buffer.alloc(1000, 7).toString());
    const script = [
      "import sys, json",
      "from runctl_agent.tar_reader import TarReader",
      "tr = TarReader(sys.stdin.buffer)",
      "out = []",
      "while True:",
      "    m = tr.next()",
      "    if m is None: break",
      "    out.append([m.name, m.kind, m.mode, len(tr.read_all())])",
      "print(json.dumps(out))",
    ].join("\n");
    const agentDir = join(dirname(fileURLToPath(import.meta.url)), "../../src/agent");
    const py = spawnSync("python3", ["-c", script], { input: bytes, env: { ...process.env, PYTHONPATH: agentDir } });
    expect(py.stderr.toString()).toBe("");
    const read = JSON.parse(py.stdout.toString()) as [string, string, number, number][];
    expect(read.map((m) => m[0])).toEqual([CONTROL_MEMBER_NAME, ...manifest.entries.map((e) => e.path)]);
    expect(read.slice(1).map((m) => [m[1], m[2], m[3]])).toEqual(manifest.entries.map((e) => ["file", e.mode, e.size]));
  });

  it("sends every entry when upload is not given", async () => {
    const root = await tree({ "a": "1", "b/c": "2" });
    const manifest = await buildManifest(root);
    const { stream, done } = packSyncTar({ root, entries: manifest.entries });
    const parsed = await members(await collect(stream));
    await done;
    expect(parsed.members.map((m) => m.name)).toEqual([CONTROL_MEMBER_NAME, "a", "b/c"]);
  });

  it("hashes entries without a sha256 from the bytes it sends, and sends expect last", async () => {
    const big = Buffer.alloc(700 * 1024, 3);
    const root = await tree({ "a.py": "known", "b.py": "new file", "big.bin": big });
    const manifest = await buildManifest(root);
    // a.py keeps its hash; b.py and big.bin (one small, one streamed) are hashed while packed.
    const entries = manifest.entries.map((e) => (e.path === "a.py" ? e : { ...e, sha256: undefined }));
    const hashedWhilePacked: string[] = [];
    const { stream, done } = packSyncTar({ root, entries, upload: ["b.py", "big.bin"], delete: ["old.py"], onFileHashed: (e) => hashedWhilePacked.push(`${e.path} ${e.sha256}`) });
    const parsed = await members(await collect(stream));
    const result = await done;
    expect(result.entries).toEqual(manifest.entries);
    expect(hashedWhilePacked).toEqual([`b.py ${sha("new file")}`, `big.bin ${sha(big)}`]);
    expect(parsed.members.map((m) => m.name)).toEqual([CONTROL_MEMBER_NAME, "b.py", "big.bin", EXPECT_MEMBER_NAME]);
    expect(JSON.parse(parsed.members[0]!.data.toString("utf8"))).toEqual({ delete: ["old.py"], expectTrailer: true });
    const trailer = JSON.parse(parsed.members[3]!.data.toString("utf8")) as { expect: SyncControl["expect"] };
    expect(trailer.expect).toEqual(Object.fromEntries(manifest.entries.map((e) => [e.path, { size: e.size, mode: e.mode, sha256: e.sha256 }])));
  });

  it("fails with SYNC_VERIFY_FAILED and never sends a whole member when a file changed after hashing", async () => {
    const big = Buffer.alloc(700 * 1024, 1);
    const root = await tree({ "a.py": "ok", "big.bin": big, "small.py": "1234" });
    const manifest = await buildManifest(root);
    const changed = Buffer.from(big);
    changed[changed.length - 1] = 2; // same size, different last byte
    await writeFile(join(root, "big.bin"), changed);

    const { stream, done } = packSyncTar({ root, entries: manifest.entries });
    const bytes: Buffer[] = [];
    let streamError: unknown;
    try {
      for await (const chunk of stream) bytes.push(chunk as Buffer);
    } catch (error) {
      streamError = error;
    }
    await expect(done).rejects.toMatchObject({ code: "SYNC_VERIFY_FAILED", retryable: true, details: { reason: "changed-while-packing", path: "big.bin" } });
    expect(streamError).toBeDefined();
    const parsed = await members(Buffer.concat(bytes));
    expect(parsed.error).toBeDefined(); // truncated inside big.bin
    expect(parsed.members.map((m) => m.name)).toEqual([CONTROL_MEMBER_NAME, "a.py"]);
  });

  it("fails before the header when a file changed size", async () => {
    const root = await tree({ "a.py": "ok" });
    const manifest = await buildManifest(root);
    await writeFile(join(root, "a.py"), "longer now");
    const { stream, done } = packSyncTar({ root, entries: manifest.entries });
    await expect(collect(stream)).rejects.toBeDefined();
    await expect(done).rejects.toMatchObject({ code: "SYNC_VERIFY_FAILED", message: expect.stringContaining("a.py changed") });
  });

  it("keeps memory bounded while the consumer is slow", async () => {
    const size = 48 * 1024 * 1024;
    const root = await tree({ "weights.bin": Buffer.alloc(size, 3) });
    const manifest = await buildManifest(root);
    const before = process.memoryUsage().arrayBuffers;
    const { stream, done } = packSyncTar({ root, entries: manifest.entries });
    await sleep(300); // nobody reads: the packer must wait instead of loading the file
    const grown = process.memoryUsage().arrayBuffers - before;
    expect(grown).toBeLessThan(8 * 1024 * 1024);
    let total = 0;
    for await (const chunk of stream) total += (chunk as Buffer).length;
    await done;
    expect(total).toBeGreaterThan(size);
  });

  it("stops with ABORTED when the signal fires", async () => {
    const root = await tree({ "a.py": "a" });
    const manifest = await buildManifest(root);
    const controller = new AbortController();
    controller.abort();
    const { stream, done } = packSyncTar({ root, entries: manifest.entries, signal: controller.signal });
    await expect(collect(stream)).rejects.toBeDefined();
    await expect(done).rejects.toMatchObject({ code: "ABORTED" });
  });

  it("settles done when the consumer goes away mid-stream", async () => {
    const root = await tree({ "a.bin": Buffer.alloc(4 * 1024 * 1024, 1) });
    const manifest = await buildManifest(root);
    const { stream, done } = packSyncTar({ root, entries: manifest.entries });
    for await (const _chunk of stream) break; // destroys the stream after the first chunk
    await expect(done).rejects.toMatchObject({ details: { reason: "stream-closed" } });
  });
});
