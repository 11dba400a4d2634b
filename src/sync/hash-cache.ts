import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";

/**
 * What a cached hash is keyed by, besides its path. Any change means the file is hashed again.
 *
 * @defaultValue none (every field is required)
 * @example
 * ```ts
 * const st = await lstat(file);
 * const key: HashCacheKey = { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino };
 * ```
 */
export interface HashCacheKey {
  /** Size in bytes. */
  readonly size: number;
  /** Modification time in ms (with the sub-millisecond fraction Node reports). */
  readonly mtimeMs: number;
  /** Inode number (changes when a file is replaced by rename, as editors and git checkouts do). */
  readonly ino: number;
}

/**
 * Version of the on-disk format; a file with another version is ignored (and rewritten).
 *
 * @defaultValue 1
 * @example
 * ```ts
 * JSON.parse(text).version === HASH_CACHE_VERSION;
 * ```
 */
export const HASH_CACHE_VERSION = 1;

/**
 * How long after its last modification a file must have been hashed for the hash to be cached. A file
 * written again within the same timestamp tick as the hashing could keep its size and mtime with new
 * content (git's "racily clean" problem); 2 s also covers FAT's 2-second mtime granularity.
 *
 * @defaultValue 2000
 * @example
 * ```ts
 * const trusted = hashedAtMs - mtimeMs > RACY_WINDOW_MS;
 * ```
 */
export const RACY_WINDOW_MS = 2000;

/** One cached file: `[size, mtimeMs, ino, sha256]`, an array to keep a 50,000-file cache small. */
type CachedTuple = [number, number, number, string];

interface CacheFile {
  version: number;
  /** Absolute root folder -> posix relative path -> tuple. */
  roots: Record<string, Record<string, CachedTuple>>;
}

/**
 * A persisted sha256 cache for one source root, so an unchanged tree is not re-read.
 *
 * File format (JSON): `{"version": 1, "roots": {"/abs/root": {"rel/path": [size, mtimeMs, ino, "sha256"]}}}`.
 * Several roots may share one file; {@link HashCache.save} replaces only this root's map with the
 * entries used in this walk (so deleted files drop out) and keeps the others. Writes are atomic
 * (temporary file, then rename); a missing, unreadable or foreign-version file is an empty cache.
 * Two processes saving at once: the last one wins, which only costs re-hashing later.
 *
 * @example
 * ```ts
 * const cache = await HashCache.load("/home/me/.runctl/cache/sync-hashes.json", "/home/me/proj");
 * const hit = cache.get("train.py", { size, mtimeMs, ino });
 * cache.set("train.py", { size, mtimeMs, ino }, sha256, Date.now());
 * await cache.save();
 * ```
 *
 * @defaultValue an in-memory cache when no file path is given
 */
export class HashCache {
  private readonly next: Record<string, CachedTuple> = {};
  private dirty = false;

  private constructor(
    /** Where the cache lives; undefined for an in-memory cache that is never saved. */
    readonly filePath: string | undefined,
    /** The absolute root this cache instance serves. */
    readonly root: string,
    private readonly file: CacheFile,
    private readonly current: Record<string, CachedTuple>,
  ) {}

  /**
   * Reads the cache file (or starts empty) for the files under `root`.
   *
   * @defaultValue filePath = undefined (in memory only: nothing is read or written)
   * @example
   * ```ts
   * const cache = await HashCache.load(undefined, process.cwd()); // a throwaway cache
   * ```
   */
  static async load(filePath: string | undefined, root: string): Promise<HashCache> {
    const absRoot = resolve(root);
    let file: CacheFile = { version: HASH_CACHE_VERSION, roots: {} };
    if (filePath !== undefined) {
      try {
        const parsed = JSON.parse(await readFile(filePath, "utf8")) as Partial<CacheFile>;
        if (parsed.version === HASH_CACHE_VERSION && typeof parsed.roots === "object" && parsed.roots !== null) {
          file = { version: HASH_CACHE_VERSION, roots: parsed.roots };
        }
      } catch {
        // Missing or corrupt: a cache miss everywhere is always safe.
      }
    }
    const current = file.roots[absRoot];
    return new HashCache(filePath, absRoot, file, typeof current === "object" && current !== null ? current : {});
  }

  /**
   * The cached sha256 of `path` when size, mtime and inode all match; otherwise undefined. A hit also
   * keeps the entry for the next {@link HashCache.save}.
   *
   * @defaultValue returns undefined on any mismatch
   * @example
   * ```ts
   * const sha = cache.get("a.py", { size: 10, mtimeMs: 1700000000000, ino: 42 });
   * ```
   */
  get(path: string, key: HashCacheKey): string | undefined {
    const hit = this.current[path];
    if (!Array.isArray(hit) || hit.length !== 4) return undefined;
    const [size, mtimeMs, ino, sha256] = hit;
    if (size !== key.size || mtimeMs !== key.mtimeMs || ino !== key.ino || typeof sha256 !== "string") return undefined;
    this.next[path] = hit;
    return sha256;
  }

  /**
   * Records a freshly computed hash. Not kept when the file was modified within {@link RACY_WINDOW_MS}
   * of `hashedAtMs` (it could change again without changing its mtime).
   *
   * @defaultValue hashedAtMs = `Date.now()`
   * @example
   * ```ts
   * cache.set("a.py", { size: 10, mtimeMs, ino }, "e3b0...", startedAt);
   * ```
   */
  set(path: string, key: HashCacheKey, sha256: string, hashedAtMs: number = Date.now()): void {
    this.dirty = true;
    if (hashedAtMs - key.mtimeMs <= RACY_WINDOW_MS) return;
    this.next[path] = [key.size, key.mtimeMs, key.ino, sha256];
  }

  /**
   * Writes the entries used since {@link HashCache.load} (hits and new hashes) for this root. Skips
   * the write when nothing changed. Errors are swallowed: a cache must never fail a sync.
   *
   * @defaultValue no-op for an in-memory cache
   * @example
   * ```ts
   * await cache.save();
   * ```
   */
  async save(): Promise<void> {
    if (this.filePath === undefined) return;
    const same = !this.dirty && Object.keys(this.next).length === Object.keys(this.current).length;
    if (same) return;
    this.file.roots[this.root] = this.next;
    const tmp = `${this.filePath}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    try {
      await mkdir(dirname(this.filePath), { recursive: true });
      await writeFile(tmp, JSON.stringify(this.file));
      await rename(tmp, this.filePath);
    } catch {
      await rm(tmp, { force: true }).catch(() => {});
    }
  }
}
