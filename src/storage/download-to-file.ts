import { randomBytes } from "node:crypto";
import { mkdir, open, rename, rm, type FileHandle } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import type { Readable } from "node:stream";
import { RunctlError, throwIfAborted } from "../errors/runctl-error.js";
import { validateStorageKey } from "./storage-key.js";
import type { Storage, StorageCallOptions, StorageObjectInfo } from "./types.js";

/** INVALID_ARGUMENT unless `path` can name a file: a non-empty string without NUL, not ending in `/`. */
function checkFilePath(path: string): void {
  if (typeof path !== "string" || path === "" || path.includes("\0") || path.endsWith("/")) {
    throw new RunctlError("INVALID_ARGUMENT", `A download needs the path of a file, got ${JSON.stringify(path)}.`);
  }
}

/**
 * Fills a new file at `path` through `write` (which gets an open handle and resolves with the bytes
 * written) so that readers never see part of it: the bytes go to a temporary file beside `path`
 * (`.<name>.runctl-<hex>`), which is renamed over `path` only once `write` resolved. On any failure
 * or abort the temporary file is removed and `path` is untouched. Parent folders are created.
 * A local file system error is STORAGE_ERROR naming the path.
 */
export async function writeFileAtomically(path: string, signal: AbortSignal | undefined, write: (file: FileHandle) => Promise<number>): Promise<number> {
  checkFilePath(path);
  throwIfAborted(signal);
  const target = resolve(path);
  const tmp = join(dirname(target), `.${basename(target)}.runctl-${randomBytes(6).toString("hex")}`);
  const local = (err: unknown): RunctlError =>
    err instanceof RunctlError ? err : new RunctlError("STORAGE_ERROR", `Writing ${target} failed: ${(err as Error).message}`, { cause: err, details: { path: target } });
  let file: FileHandle | undefined;
  try {
    await mkdir(dirname(target), { recursive: true });
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
