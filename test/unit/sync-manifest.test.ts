import { createHash } from "node:crypto";
import { chmod, mkdir, mkdtemp, readFile, rename, rm, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { RunctlError } from "../../src/errors/runctl-error.js";
import { HASH_CACHE_VERSION, HashCache } from "../../src/sync/hash-cache.js";
import { buildManifest, hashScanFiles, manifestDigest, type ManifestEntry } from "../../src/sync/manifest.js";
import { scanTree } from "../../src/sync/scan-tree.js";
import { checkSizeLimits, formatBytes, largestEntries } from "../../src/sync/size-guard.js";

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "runctl-manifest-"));
  dirs.push(d);
  return d;
}

async function tree(files: Record<string, string | Buffer>): Promise<string> {
  const root = await tempDir();
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), content);
  }
  return root;
}

const sha = (data: string | Buffer): string => createHash("sha256").update(data).digest("hex");
/** An mtime safely outside the racy window, so hashes are cached. */
const OLD = new Date(Date.now() - 3600_000);

async function age(root: string, paths: string[]): Promise<void> {
  for (const p of paths) await utimes(join(root, p), OLD, OLD);
}

describe("scanTree", () => {
  it("lists regular files sorted by code unit with permission bits", async () => {
    const root = await tree({ "b.py": "b", "a/z.py": "z", "B.txt": "B", "run.sh": "#!/bin/sh\n" });
    await chmod(join(root, "run.sh"), 0o755);
    const scan = await scanTree(root);
    expect(scan.files.map((f) => f.path)).toEqual(["B.txt", "a/z.py", "b.py", "run.sh"]);
    expect(scan.files.find((f) => f.path === "run.sh")?.mode).toBe(0o755);
    expect(scan.totalBytes).toBe(1 + 1 + 1 + 10);
    expect(scan.truncated).toBe(false);
  });

  it("skips symlinks (files and folders) with a warning and never follows them", async () => {
    const outside = await tree({ "secret.txt": "s", "dir/x.txt": "x" });
    const root = await tree({ "train.py": "t", ".gitignore": "ignored-link\n" });
    await symlink(join(outside, "secret.txt"), join(root, "link.txt"));
    await symlink(join(outside, "dir"), join(root, "linkdir"));
    await symlink(join(outside, "dir"), join(root, "ignored-link"));
    const scan = await scanTree(root);
    expect(scan.files.map((f) => f.path)).toEqual([".gitignore", "train.py"]);
    expect(scan.warnings).toHaveLength(2);
    expect(scan.warnings.join("\n")).toMatch(/symlink link\.txt.*does not follow or copy symlinks/);
    expect(scan.warnings.join("\n")).toMatch(/symlink linkdir/);
  });

  it("follows a root that is itself a symlink", async () => {
    const real = await tree({ "a.py": "a" });
    const parent = await tempDir();
    await symlink(real, join(parent, "proj"));
    expect((await scanTree(join(parent, "proj"))).files.map((f) => f.path)).toEqual(["a.py"]);
  });

  it("fails with SYNC_DIR_NOT_FOUND for a missing folder or a file", async () => {
    const root = await tree({ "f.txt": "x" });
    await expect(scanTree(join(root, "nope"))).rejects.toMatchObject({ code: "SYNC_DIR_NOT_FOUND" });
    await expect(scanTree(join(root, "f.txt"))).rejects.toMatchObject({ code: "SYNC_DIR_NOT_FOUND" });
  });

  it("stops early once stopAfterFiles is exceeded", async () => {
    const files: Record<string, string> = {};
    for (let i = 0; i < 30; i++) files[`d${i % 3}/f${i}.txt`] = "x";
    const root = await tree(files);
    const scan = await scanTree(root, { stopAfterFiles: 5, concurrency: 1 });
    expect(scan.truncated).toBe(true);
    expect(scan.files.length).toBeLessThan(30);
  });

  it("honours an abort signal", async () => {
    const root = await tree({ "a.py": "a" });
    const controller = new AbortController();
    controller.abort();
    await expect(scanTree(root, { signal: controller.signal })).rejects.toMatchObject({ code: "ABORTED" });
  });
});

describe("buildManifest", () => {
  it("hashes content with sha256 and keeps size and mode", async () => {
    const big = Buffer.alloc(1024 * 1024 + 17, 7);
    const root = await tree({ "a.py": "print(1)\n", "empty": "", "w/big.bin": big });
    const m = await buildManifest(root);
    expect(m.entries.map((e) => [e.path, e.size, e.sha256])).toEqual([
      ["a.py", 9, sha("print(1)\n")],
      ["empty", 0, sha("")],
      ["w/big.bin", big.length, sha(big)],
    ]);
    expect(m.entries[0]?.mode).toBe((await stat(join(root, "a.py"))).mode & 0o777);
    expect(m.totalBytes).toBe(9 + big.length);
    expect(m.stats).toEqual({ hashedFiles: 3, hashedBytes: 9 + big.length, cachedFiles: 0 });
  });

  it("reuses cached hashes for an unchanged tree without reading it", async () => {
    const root = await tree({ "a.py": "aaaa", "b/c.py": "cccc", "d.txt": "dddd" });
    await age(root, ["a.py", "b/c.py", "d.txt"]);
    const cachePath = join(await tempDir(), "cache", "sync-hashes.json");
    const first = await buildManifest(root, { hashCachePath: cachePath });
    expect(first.stats).toMatchObject({ hashedFiles: 3, cachedFiles: 0 });

    const second = await buildManifest(root, { hashCachePath: cachePath });
    expect(second.stats).toEqual({ hashedFiles: 0, hashedBytes: 0, cachedFiles: 3 });
    expect(second.entries).toEqual(first.entries);

    // Proof that content is not read: same size, mtime and inode but new bytes -> the old hash comes back.
    await writeFile(join(root, "a.py"), "XXXX");
    await age(root, ["a.py"]);
    const third = await buildManifest(root, { hashCachePath: cachePath });
    expect(third.entries.find((e) => e.path === "a.py")?.sha256).toBe(sha("aaaa"));
    expect(third.stats.cachedFiles).toBe(3);
  });

  it("re-hashes a file whose size, mtime or inode changed", async () => {
    const root = await tree({ "a.py": "aaaa", "b.py": "bbbb", "c.py": "cccc", "d.py": "dddd" });
    await age(root, ["a.py", "b.py", "c.py", "d.py"]);
    const cachePath = join(await tempDir(), "hashes.json");
    await buildManifest(root, { hashCachePath: cachePath });

    await writeFile(join(root, "a.py"), "aaaaa"); // size
    await age(root, ["a.py"]);
    await writeFile(join(root, "b.py"), "BBBB"); // mtime
    const newTime = new Date(OLD.getTime() + 1000);
    await utimes(join(root, "b.py"), newTime, newTime);
    await writeFile(join(root, "c.tmp"), "CCCC"); // inode: replaced by rename, as editors do
    await utimes(join(root, "c.tmp"), OLD, OLD);
    await rename(join(root, "c.tmp"), join(root, "c.py"));

    const m = await buildManifest(root, { hashCachePath: cachePath });
    expect(m.stats).toMatchObject({ hashedFiles: 3, cachedFiles: 1 });
    expect(Object.fromEntries(m.entries.map((e) => [e.path, e.sha256]))).toEqual({
      "a.py": sha("aaaaa"),
      "b.py": sha("BBBB"),
      "c.py": sha("CCCC"),
      "d.py": sha("dddd"),
    });
  });

  it("does not cache a file modified just before it was hashed (racy mtime)", async () => {
    const root = await tree({ "fresh.py": "1" });
    const cachePath = join(await tempDir(), "hashes.json");
    await buildManifest(root, { hashCachePath: cachePath });
    const again = await buildManifest(root, { hashCachePath: cachePath });
    expect(again.stats).toMatchObject({ hashedFiles: 1, cachedFiles: 0 });
  });

  it("persists a documented cache format and drops deleted files from it", async () => {
    const root = await tree({ "a.py": "a", "b.py": "b" });
    await age(root, ["a.py", "b.py"]);
    const cachePath = join(await tempDir(), "hashes.json");
    await buildManifest(root, { hashCachePath: cachePath });
    const st = await stat(join(root, "a.py"));
    const file = JSON.parse(await readFile(cachePath, "utf8")) as { version: number; roots: Record<string, Record<string, unknown>> };
    expect(file.version).toBe(HASH_CACHE_VERSION);
    expect(file.roots[root]?.["a.py"]).toEqual([1, st.mtimeMs, st.ino, sha("a")]);

    await rm(join(root, "b.py"));
    await buildManifest(root, { hashCachePath: cachePath });
    const after = JSON.parse(await readFile(cachePath, "utf8")) as { roots: Record<string, Record<string, unknown>> };
    expect(Object.keys(after.roots[root] ?? {})).toEqual(["a.py"]);
  });

  it("treats a corrupt cache file as empty", async () => {
    const root = await tree({ "a.py": "a" });
    const cachePath = join(await tempDir(), "hashes.json");
    await writeFile(cachePath, "{not json");
    const m = await buildManifest(root, { hashCachePath: cachePath });
    expect(m.entries[0]?.sha256).toBe(sha("a"));
  });

  it("refuses a tree over the limits before reading any file", async () => {
    const root = await tree({ "small.py": "x", "data/huge.bin": Buffer.alloc(4096), "data/b.bin": Buffer.alloc(2048) });
    const cachePath = join(await tempDir(), "hashes.json");
    const err = await buildManifest(root, { hashCachePath: cachePath, limits: { maxBytes: 1000 } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RunctlError);
    expect((err as RunctlError).code).toBe("SYNC_TOO_LARGE");
    expect((err as RunctlError).message).toContain("data/huge.bin");
    await expect(stat(cachePath)).rejects.toMatchObject({ code: "ENOENT" });
  });
});

describe("manifestDigest", () => {
  const a: ManifestEntry = { path: "a.py", size: 1, mode: 0o644, sha256: sha("a") };
  const b: ManifestEntry = { path: "b/c.py", size: 1, mode: 0o644, sha256: sha("c") };

  it("does not depend on entry order and changes with any field", () => {
    expect(manifestDigest([a, b])).toBe(manifestDigest([b, a]));
    expect(manifestDigest([a, b])).not.toBe(manifestDigest([a, { ...b, mode: 0o755 }]));
    expect(manifestDigest([a, b])).not.toBe(manifestDigest([a, { ...b, path: "b/d.py" }]));
    expect(manifestDigest([])).toBe(sha(""));
  });
});

describe("size guard", () => {
  it("names the ten largest files and the largest folders", () => {
    const entries = Array.from({ length: 30 }, (_, i) => ({ path: `${i < 20 ? "data" : "src"}/f${String(i).padStart(2, "0")}`, size: (i + 1) * 1024 * 1024 }));
    const err = checkSizeLimits("/proj", entries, { maxBytes: 10 * 1024 * 1024 });
    expect(err?.code).toBe("SYNC_TOO_LARGE");
    const message = err?.message ?? "";
    for (let i = 20; i < 30; i++) expect(message).toContain(`src/f${i}`);
    expect(message).not.toContain("src/f19");
    expect(message).not.toContain("data/f19 ");
    expect(message).toMatch(/data\/ \(20 files\)/);
    expect(message).toContain(".runctlignore");
    expect(err?.details["largestFiles"]).toHaveLength(10);
    expect(checkSizeLimits("/proj", entries)).toBeUndefined();
    expect(checkSizeLimits("/proj", entries, { maxFiles: 29 })?.message).toMatch(/30 files.*limits: 1\.0 GiB, 29 files/);
  });

  it("lists folders by count when the file limit is what was exceeded", () => {
    const entries = [{ path: "big/one", size: 1000 }, ...Array.from({ length: 5 }, (_, i) => ({ path: `many/f${i}`, size: 1 }))];
    expect(largestEntries(entries, 10, true).folders.map((f) => f.path)).toEqual(["many/", "big/"]);
    expect(largestEntries(entries).folders.map((f) => f.path)).toEqual(["big/", "many/"]);
  });

  it("formats bytes", () => {
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatBytes(1024 ** 3)).toBe("1.0 GiB");
  });
});

describe("hashScanFiles readyToRead", () => {
  it("reads no uncached file before readyToRead settles, then asks defer", async () => {
    const root = await tree({ "a.py": "a", "big.bin": Buffer.alloc(300 * 1024, 1), "keep.py": "k" });
    const scan = await scanTree(root);
    const cache = await HashCache.load(undefined, root);
    let release: () => void = () => {};
    const ready = new Promise<void>((resolve) => (release = resolve));
    const asked: string[] = [];
    let settled = false;
    const hashing = hashScanFiles(scan, cache, {
      readyToRead: ready,
      defer: (file) => {
        asked.push(file.path);
        return file.path !== "keep.py"; // the machine lacks all but keep.py
      },
    }).finally(() => (settled = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(asked).toEqual([]);
    expect(settled).toBe(false);
    release();
    const { manifest, deferred } = await hashing;
    expect(asked.sort()).toEqual(["a.py", "big.bin", "keep.py"]);
    expect(deferred.map((f) => f.path)).toEqual(["a.py", "big.bin"]);
    expect(manifest.entries).toEqual([expect.objectContaining({ path: "keep.py", sha256: sha("k") })]);
    expect(manifest.stats).toMatchObject({ hashedFiles: 1, cachedFiles: 0 });
  });
});
