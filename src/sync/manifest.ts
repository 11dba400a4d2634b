import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { throwIfAborted } from "../errors/runctl-error.js";
import { HashCache } from "./hash-cache.js";
import { createLimiter } from "./limiter.js";
import { DEFAULT_FS_CONCURRENCY, scanTree, type ScanTreeOptions, type ScannedFile, type TreeScan } from "./scan-tree.js";
import { checkSizeLimits, type SizeLimits } from "./size-guard.js";

/**
 * One file of a manifest: what the agent's `manifest` command reports per file, plus its path.
 *
 * @defaultValue none (every field is required)
 * @example
 * ```ts
 * const e: ManifestEntry = { path: "src/train.py", size: 812, mode: 0o644, sha256: "9f86d0..." };
 * ```
 */
export interface ManifestEntry {
  /** Posix path relative to the root. */
  readonly path: string;
  /** Size in bytes. */
  readonly size: number;
  /** Permission bits (`mode & 0o777`, e.g. 420 = 0o644). */
  readonly mode: number;
  /** Lower-case hex sha256 of the content. */
  readonly sha256: string;
}

/**
 * A local manifest entry, with the stat facts the tar stream re-checks while packing.
 *
 * @defaultValue none (every field is required)
 * @example
 * ```ts
 * const e: LocalManifestEntry = { path: "a.py", size: 1, mode: 0o644, sha256: "ca97...", mtimeMs: 1.7e12, ino: 42 };
 * ```
 */
export interface LocalManifestEntry extends ManifestEntry {
  /** Modification time in ms when hashed. */
  readonly mtimeMs: number;
  /** Inode number when hashed. */
  readonly ino: number;
}

/**
 * Counters that show how much work a manifest took (and prove the hash cache works).
 *
 * @defaultValue none (every field is always set)
 * @example
 * ```ts
 * const { stats } = await buildManifest(".", { hashCachePath });
 * console.log(`${stats.cachedFiles} cached, ${stats.hashedFiles} read`);
 * ```
 */
export interface ManifestStats {
  /** Files whose content was read and hashed. */
  readonly hashedFiles: number;
  /** Bytes read for hashing. */
  readonly hashedBytes: number;
  /** Files whose hash came from the cache without reading them. */
  readonly cachedFiles: number;
}

/**
 * The content manifest of a local source tree, from {@link buildManifest}.
 *
 * @defaultValue none (every field is always set)
 * @example
 * ```ts
 * const m: Manifest = await buildManifest("./");
 * for (const e of m.entries) console.log(e.path, e.sha256);
 * ```
 */
export interface Manifest {
  /** The absolute root. */
  readonly root: string;
  /** Every file to sync, sorted by path (code-unit order). */
  readonly entries: readonly LocalManifestEntry[];
  /** Sum of the entries' sizes. */
  readonly totalBytes: number;
  /** Skipped symlinks, special and unreadable files. */
  readonly warnings: readonly string[];
  /** Work done. */
  readonly stats: ManifestStats;
}

/**
 * Options of {@link buildManifest}.
 *
 * @defaultValue `{}`: defaults excludes, no cache, no limits
 * @example
 * ```ts
 * const options: BuildManifestOptions = { ignore: ["data/"], hashCachePath: "/home/me/.runctl/cache/sync-hashes.json", limits: { maxBytes: 2 ** 30 } };
 * ```
 */
export interface BuildManifestOptions extends ScanTreeOptions {
  /**
   * JSON file that caches hashes by (path, size, mtimeMs, inode) across calls, e.g.
   * `~/.runctl/cache/sync-hashes.json`. See {@link HashCache} for the format.
   * @defaultValue undefined (every file is read)
   */
  readonly hashCachePath?: string | undefined;
  /**
   * When set, a tree over these limits fails with SYNC_TOO_LARGE after the scan and before any file is
   * read. @defaultValue undefined (no limit)
   */
  readonly limits?: SizeLimits | undefined;
  /** Called after each file is hashed or found in the cache. @defaultValue undefined */
  readonly onFileHashed?: ((done: number, total: number) => void) | undefined;
}

/**
 * Builds the content manifest (path, size, mode, sha256) of a source tree: {@link scanTree} (ignore
 * rules, no symlinks), then sha256 of each file with bounded concurrency, reusing cached hashes when
 * size, mtime and inode are unchanged.
 *
 * @defaultValue options = `{}`
 * @example
 * ```ts
 * const m = await buildManifest("./", { ignore: ["data/"], hashCachePath: "/home/me/.runctl/cache/sync-hashes.json" });
 * console.log(m.entries.length, manifestDigest(m.entries), m.stats.cachedFiles);
 * ```
 */
export async function buildManifest(root: string, options: BuildManifestOptions = {}): Promise<Manifest> {
  const stopAfterFiles = options.stopAfterFiles ?? (options.limits ? (options.limits.maxFiles ?? Number.POSITIVE_INFINITY) : undefined);
  const scan = await scanTree(root, { ...options, stopAfterFiles });
  if (options.limits) {
    const tooLarge = checkSizeLimits(scan.root, scan.files, options.limits, scan.truncated);
    if (tooLarge) throw tooLarge;
  }
  return hashScan(scan, options);
}

/**
 * Hashes the files of a {@link TreeScan} (the second half of {@link buildManifest}). Files that vanish
 * in between are left out; a file read while it is being written is re-read until a stable read
 * (same size and mtime before and after), up to 3 times.
 *
 * @defaultValue options = `{}`
 * @example
 * ```ts
 * const scan = await scanTree("./");
 * const manifest = await hashScan(scan, { hashCachePath });
 * ```
 */
export async function hashScan(
  scan: TreeScan,
  options: Pick<BuildManifestOptions, "hashCachePath" | "concurrency" | "signal" | "onFileHashed"> = {},
): Promise<Manifest> {
  const cache = await HashCache.load(options.hashCachePath, scan.root);
  const hashed = await hashScanFiles(scan, cache, options);
  await cache.save();
  return hashed.manifest;
}

/**
 * Options of {@link hashScanFiles}.
 *
 * @defaultValue see each field
 * @example
 * ```ts
 * const options: HashScanFilesOptions = { defer: (file) => !remote.has(file.path) };
 * ```
 */
export interface HashScanFilesOptions extends Pick<BuildManifestOptions, "concurrency" | "signal" | "onFileHashed"> {
  /**
   * Asked, just before an uncached file would be read, whether to leave it out instead (it will be
   * hashed while it is sent, so reading it now would read it twice). @defaultValue never
   */
  readonly defer?: ((file: ScannedFile) => boolean) | undefined;
  /**
   * Settles when `defer` can decide (the machine's listing is in): no uncached file is read before,
   * so a file the machine lacks is never read here and then again while it is sent. Files whose hash
   * is cached are taken meanwhile. @defaultValue undefined (read at once)
   */
  readonly readyToRead?: Promise<unknown> | undefined;
}

/**
 * {@link hashScan} with a cache the caller loads and saves, and files that may be deferred.
 *
 * @defaultValue options = `{}`
 * @example
 * ```ts
 * const { manifest, deferred } = await hashScanFiles(scan, await HashCache.load(path, scan.root), { defer });
 * ```
 */
export async function hashScanFiles(scan: TreeScan, cache: HashCache, options: HashScanFilesOptions = {}): Promise<{ readonly manifest: Manifest; readonly deferred: readonly ScannedFile[] }> {
  const limit = createLimiter(options.concurrency ?? DEFAULT_FS_CONCURRENCY);
  const warnings = [...scan.warnings];
  const results: (LocalManifestEntry | undefined)[] = new Array<LocalManifestEntry | undefined>(scan.files.length);
  const deferred: ScannedFile[] = [];
  let hashedFiles = 0;
  let hashedBytes = 0;
  let cachedFiles = 0;
  let done = 0;
  const total = scan.files.length;

  let ready = options.readyToRead === undefined;
  const readyToRead = options.readyToRead?.then(
    () => void (ready = true),
    () => void (ready = true),
  );
  /** True when the file needs no read now: its hash came from the cache, or it is deferred. */
  const settled = async (index: number): Promise<boolean> => {
    const file = scan.files[index]!;
    const cached = cache.get(file.path, file);
    if (cached !== undefined) {
      results[index] = { path: file.path, size: file.size, mode: file.mode, sha256: cached, mtimeMs: file.mtimeMs, ino: file.ino };
      cachedFiles++;
      return true;
    }
    if (!ready) await readyToRead;
    if (options.defer?.(file) === true) {
      deferred.push(file);
      return true;
    }
    return false;
  };
  const hashed = (index: number, entry: Omit<LocalManifestEntry, "path">, startedAt: number): void => {
    const file = scan.files[index]!;
    results[index] = { path: file.path, ...entry };
    hashedFiles++;
    hashedBytes += entry.size;
    cache.set(file.path, entry, entry.sha256, startedAt);
  };
  const skipped = (index: number, cause: unknown): void => {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code !== "ENOENT") warnings.push(`Skipped ${scan.files[index]!.path}: ${code === "ELOOP" ? "it became a symlink" : (cause as Error).message}`);
  };
  const progressed = (): void => {
    done++;
    options.onFileHashed?.(done, total);
  };

  // Small files (most of a source tree) are read with synchronous calls in short time slices: one
  // file costs five or six filesystem calls, and through the thread pool each call's round trip costs
  // more than the call itself (3-4x slower on a 2-CPU VM for 2,000 files). Larger files stream
  // through the thread pool meanwhile, with bounded concurrency.
  const small: number[] = [];
  const large: number[] = [];
  scan.files.forEach((file, index) => (file.size <= SMALL_FILE_BYTES ? small : large).push(index));
  const hashSmall = async (): Promise<void> => {
    let sliceStart = performance.now();
    for (const index of small) {
      throwIfAborted(options.signal);
      if (!(await settled(index))) {
        const startedAt = Date.now();
        try {
          hashed(index, hashFileSync(join(scan.root, scan.files[index]!.path)), startedAt);
        } catch (cause) {
          skipped(index, cause);
        }
      }
      progressed();
      if (performance.now() - sliceStart > SYNC_SLICE_MS) {
        await yieldToEventLoop();
        sliceStart = performance.now();
      }
    }
  };
  await Promise.all([
    hashSmall(),
    ...large.map((index) =>
      limit(async () => {
        throwIfAborted(options.signal);
        if (!(await settled(index))) {
          const startedAt = Date.now();
          try {
            hashed(index, await hashFile(join(scan.root, scan.files[index]!.path)), startedAt);
          } catch (cause) {
            skipped(index, cause);
          }
        }
        progressed();
      }),
    ),
  ]);
  throwIfAborted(options.signal);
  const entries = results.filter((e): e is LocalManifestEntry => e !== undefined);
  let totalBytes = 0;
  for (const e of entries) totalBytes += e.size;
  deferred.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { manifest: { root: scan.root, entries, totalBytes, warnings, stats: { hashedFiles, hashedBytes, cachedFiles } }, deferred };
}

/**
 * Read size for hashing and packing: large enough for throughput, small enough for 32 in flight. @defaultValue 256 KiB
 *
 * @example
 * ```ts
 * const buffer = Buffer.allocUnsafe(READ_CHUNK_BYTES);
 * ```
 */
export const READ_CHUNK_BYTES = 256 * 1024;

/**
 * Files up to this size are hashed and packed with synchronous reads (in time slices of
 * {@link SYNC_SLICE_MS}); larger ones stream asynchronously. @defaultValue 256 KiB
 */
export const SMALL_FILE_BYTES = READ_CHUNK_BYTES;

/** Longest stretch of synchronous file reads before yielding to the event loop. @defaultValue 8 ms */
export const SYNC_SLICE_MS = 8;

// O_NOFOLLOW: a file swapped for a symlink after the scan is refused (ELOOP), never followed.
const OPEN_FLAGS = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0);

/**
 * Reads one file and returns its sha256 with the stat facts of the read. Retries (up to 3 reads)
 * while the file changes under it; the last read wins.
 *
 * @defaultValue retries = 3
 * @example
 * ```ts
 * const { sha256, size } = await hashFile("/src/train.py");
 * ```
 */
export async function hashFile(absPath: string, retries = 3): Promise<Omit<LocalManifestEntry, "path">> {
  for (let attempt = 1; ; attempt++) {
    const handle = await open(absPath, OPEN_FLAGS);
    try {
      const before = await handle.stat();
      const hash = createHash("sha256");
      const buffer = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, Math.max(1, before.size)));
      let read = 0;
      for (;;) {
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
        if (bytesRead === 0) break;
        hash.update(buffer.subarray(0, bytesRead));
        read += bytesRead;
      }
      const after = await handle.stat();
      const stable = read === before.size && after.size === before.size && after.mtimeMs === before.mtimeMs;
      if (stable || attempt >= retries) {
        return { size: read, mode: after.mode & 0o777, sha256: hash.digest("hex"), mtimeMs: after.mtimeMs, ino: after.ino };
      }
    } finally {
      await handle.close();
    }
  }
}

/**
 * {@link hashFile} with synchronous calls, for small files (no thread-pool round trips). Same result
 * and the same re-reads while the file changes.
 *
 * @defaultValue retries = 3
 * @example
 * ```ts
 * const { sha256 } = hashFileSync("/src/train.py");
 * ```
 */
export function hashFileSync(absPath: string, retries = 3): Omit<LocalManifestEntry, "path"> {
  for (let attempt = 1; ; attempt++) {
    const fd = openSync(absPath, OPEN_FLAGS);
    try {
      const before = fstatSync(fd);
      const hash = createHash("sha256");
      // One byte more than the size: a short read then means end of file, without another read call.
      const buffer = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, before.size + 1));
      let read = 0;
      for (;;) {
        const bytesRead = readSync(fd, buffer, 0, buffer.length, null);
        if (bytesRead === 0) break;
        hash.update(buffer.subarray(0, bytesRead));
        read += bytesRead;
        if (bytesRead < buffer.length && read >= before.size) break;
      }
      const after = fstatSync(fd);
      const stable = read === before.size && after.size === before.size && after.mtimeMs === before.mtimeMs;
      if (stable || attempt >= retries) {
        return { size: read, mode: after.mode & 0o777, sha256: hash.digest("hex"), mtimeMs: after.mtimeMs, ino: after.ino };
      }
    } finally {
      closeSync(fd);
    }
  }
}

/**
 * A digest of a whole manifest: sha256 over the entries sorted by path (code-unit order), each
 * serialised as `path NUL size NUL mode(octal) NUL sha256 LF`. Equal trees have equal digests on every
 * machine; the order the entries are given in does not matter.
 *
 * @defaultValue no default: entries are required (an empty list has a fixed digest)
 * @example
 * ```ts
 * const id = manifestDigest(manifest.entries).slice(0, 12);
 * ```
 */
export function manifestDigest(entries: readonly ManifestEntry[]): string {
  const sorted = [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const hash = createHash("sha256");
  for (const e of sorted) hash.update(`${e.path}\0${e.size}\0${e.mode.toString(8)}\0${e.sha256}\n`);
  return hash.digest("hex");
}
