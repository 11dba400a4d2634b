import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from "node:fs/promises";
import { hostname } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import type { Readable } from "node:stream";
import { RunctlError, throwIfAborted } from "../errors/runctl-error.js";
import { processAlive } from "../util/process-alive.js";
import { validateStorageKey } from "./storage-key.js";
import type { Storage, StorageCallOptions, StorageObjectInfo } from "./types.js";

/** INVALID_ARGUMENT unless `path` can name a file: a non-empty string without NUL, not ending in `/`. */
function checkFilePath(path: string): void {
  if (typeof path !== "string" || path === "" || path.includes("\0") || path.endsWith("/")) {
    throw new RunctlError("INVALID_ARGUMENT", `A download needs the path of a file, got ${JSON.stringify(path)}.`);
  }
}

/** This host in temporary files' names (6 hex digits of its name's sha256): a pid means something only where it ran. */
const HOST_ID = createHash("sha256").update(hostname()).digest("hex").slice(0, 6);
/** A temporary file of a download: `.<name>.runctl-<host>-<pid>-<8 hex>`, or `.<name>.runctl-<12 hex>` (before the host and pid were in it). */
const TEMP_NAME = /^\..+\.runctl-(?:([0-9a-f]{6})-(\d+)-[0-9a-f]{8}|[0-9a-f]{12})$/;
/** A temporary file not written for this long is stale whoever wrote it (another host, a reused pid, a hung process). */
const STALE_AFTER_MS = 60 * 60 * 1000;
/** Folders swept by this process: once each, so that many downloads into one folder do not list it each time. */
const swept = new Set<string>();

/** The name of a download's temporary file beside `target`. */
export function tempFileName(target: string): string {
  return `.${basename(target)}.runctl-${HOST_ID}-${process.pid}-${randomBytes(4).toString("hex")}`;
}

/**
 * Removes the temporary files that downloads killed mid-way left in `dir` (a SIGKILL leaves no
 * chance to remove them; they can be as large as the object): each one written on this host by a
 * process that no longer runs, and any not written for an hour. Best effort: never throws, and a
 * file it cannot read is left. A file removed under a download still running elsewhere (another
 * host on a shared folder, silent for an hour) only makes that download fail at its rename, with
 * its target untouched. Resolves with the names removed.
 */
export async function sweepStaleDownloads(dir: string, nowMs: number = Date.now()): Promise<string[]> {
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return removed;
  }
  for (const name of names) {
    const m = TEMP_NAME.exec(name);
    if (!m) continue;
    const [, host, pid] = m;
    const path = join(dir, name);
    try {
      const info = await stat(path);
      if (!info.isFile()) continue;
      const deadHere = host === HOST_ID && Number(pid) !== process.pid && !processAlive(Number(pid));
      if (!deadHere && nowMs - info.mtimeMs < STALE_AFTER_MS) continue;
      await rm(path, { force: true });
      removed.push(name);
    } catch {
      // Gone meanwhile, or not ours to read: left as it is.
    }
  }
  return removed;
}

/**
 * Fills a new file at `path` through `write` (which gets an open handle and resolves with the bytes
 * written) so that readers never see part of it: the bytes go to a temporary file beside `path`
 * (`.<name>.runctl-<host>-<pid>-<hex>`), which is renamed over `path` only once `write` resolved. On
 * any failure or abort the temporary file is removed and `path` is untouched. Parent folders are
 * created. The first download of this process into a folder sweeps the temporary files that killed
 * downloads left there ({@link sweepStaleDownloads}).
 * A local file system error is STORAGE_ERROR naming the path.
 */
export async function writeFileAtomically(path: string, signal: AbortSignal | undefined, write: (file: FileHandle) => Promise<number>): Promise<number> {
  checkFilePath(path);
  throwIfAborted(signal);
  const target = resolve(path);
  const tmp = join(dirname(target), tempFileName(target));
  const local = (err: unknown): RunctlError => {
    if (err instanceof RunctlError) return err;
    const cause = err instanceof LocalWriteError ? err.cause : err;
    const errno = (cause as { code?: unknown } | undefined)?.code;
    return new RunctlError("STORAGE_ERROR", `Writing ${target} failed: ${(cause as Error).message}`, {
      cause,
      details: { path: target, ...(typeof errno === "string" ? { errno } : {}) },
    });
  };
  let file: FileHandle | undefined;
  try {
    await mkdir(dirname(target), { recursive: true });
    if (!swept.has(dirname(target))) {
      swept.add(dirname(target));
      await sweepStaleDownloads(dirname(target));
    }
    file = await open(tmp, "wx");
    const size = await write(file);
    await file.close();
    file = undefined;
    throwIfAborted(signal);
    await rename(tmp, target);
    return size;
  } catch (err) {
    await file?.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw local(err);
  }
}

/**
 * A write into a download's local file failed (a full disk, a quota): thrown by a storage's writer
 * instead of its own error mapping, so that {@link writeFileAtomically} reports it as the local
 * file's error (STORAGE_ERROR naming the path, `details.errno`), not as the server's.
 */
export class LocalWriteError extends Error {
  constructor(override readonly cause: unknown) {
    super(cause instanceof Error ? cause.message : String(cause));
    this.name = "LocalWriteError";
  }
}

/**
 * Writes `source` into `file` from offset 0, one chunk at a time, and resolves with the bytes
 * written. (A `FileHandle` write stream is avoided: without `autoClose` it keeps the handle busy,
 * and `close()` then waits forever.)
 */
export async function writeStreamToFile(source: Readable, file: FileHandle): Promise<number> {
  let bytes = 0;
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      await file.write(chunk, 0, chunk.length, bytes);
      bytes += chunk.length;
    }
  } finally {
    source.destroy();
  }
  return bytes;
}

/**
 * Downloads the object `key` of `storage` into the local file `path`, atomically (a temporary file
 * beside it, renamed over it once complete; parent folders are created): with the storage's own
 * {@link Storage.download} when it has one (S3 writes parallel ranges straight to their offsets),
 * else by streaming {@link Storage.get}. Resolves with the object's key and size. NOT_FOUND when it
 * does not exist; on any failure `path` is as it was and nothing is left beside it.
 */
export async function downloadToFile(storage: Storage, key: string, path: string, options?: StorageCallOptions): Promise<StorageObjectInfo> {
  if (storage.download) return storage.download(key, path, options);
  validateStorageKey(key);
  const signal = options?.signal;
  const size = await writeFileAtomically(path, signal, async (file) => writeStreamToFile(await storage.get(key, options), file));
  return { key, size };
}
