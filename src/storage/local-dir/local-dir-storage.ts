import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, rename, rm, stat as fsStat, rmdir } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { dirname, join, resolve, sep } from "node:path";
import { pathToFileURL, fileURLToPath } from "node:url";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { RunctlError, throwIfAborted } from "../../errors/runctl-error.js";
import { validateStorageKey } from "../storage-key.js";
import type { Storage, StorageCallOptions, StorageDescriptor, StorageObjectInfo } from "../types.js";

/**
 * Storage in a local folder: the embedded default, needing no cloud account. Writes are atomic
 * (temporary file, then rename). Agents on machines that share this filesystem (the `local()`
 * provider) write checkpoints into it directly.
 *
 * @param path - A folder path or a `file://` URI; created on first write.
 * @example
 * ```ts
 * const run = Runctl.instance(local())
 *   .checkpoints({ storage: localDir("./checkpoints"), keep: 3 })
 *   .train("train.py");
 * ```
 */
export function localDir(path: string): Storage {
  const root = resolve(path.startsWith("file://") ? fileURLToPath(path) : path);
  const full = (key: string): string => join(root, validateStorageKey(key));

  return {
    uri: pathToFileURL(root).href,

    async put(key: string, body: string | Uint8Array | Readable, options?: StorageCallOptions): Promise<void> {
      throwIfAborted(options?.signal);
      const target = full(key);
      await mkdir(dirname(target), { recursive: true });
      const tmp = `${target}.tmp-${randomBytes(6).toString("hex")}`;
      try {
        const source = typeof body === "string" || body instanceof Uint8Array ? Readable.from([Buffer.from(body)]) : body;
        await pipeline(source, createWriteStream(tmp), options?.signal ? { signal: options.signal } : {});
        await rename(tmp, target);
      } catch (cause) {
        await rm(tmp, { force: true });
        throw storageError(`write ${key}`, cause, options?.signal);
      }
    },

    async get(key: string, options?: StorageCallOptions): Promise<Readable> {
      throwIfAborted(options?.signal);
      const target = full(key);
      const info = await fsStat(target).catch(() => undefined);
      if (!info?.isFile()) throw new RunctlError("NOT_FOUND", `No object ${key} in ${root}.`);
      return createReadStream(target, options?.signal ? { signal: options.signal } : {});
    },

    async stat(key: string, options?: StorageCallOptions): Promise<StorageObjectInfo | undefined> {
      throwIfAborted(options?.signal);
      const info = await fsStat(full(key)).catch(() => undefined);
      if (!info?.isFile()) return undefined;
      return { key, size: info.size, modifiedAt: info.mtime };
    },

    async *list(prefix: string, options?: StorageCallOptions): AsyncIterable<StorageObjectInfo> {
      validateStorageKey(prefix, { allowPrefix: true });
      // Walk only the deepest folder the prefix names, then filter by the full string prefix.
      const slash = prefix.lastIndexOf("/");
      const base = slash === -1 ? "" : prefix.slice(0, slash);
      yield* walk(root, base, prefix, options?.signal);
    },

    async delete(keys: string | readonly string[], options?: StorageCallOptions): Promise<void> {
      for (const key of typeof keys === "string" ? [keys] : keys) {
        throwIfAborted(options?.signal);
        const target = full(key);
        await rm(target, { force: true });
        await pruneEmptyParents(dirname(target), root);
      }
    },

    machineDescriptor({ sharesLocalFilesystem }): StorageDescriptor | undefined {
      return sharesLocalFilesystem ? { kind: "dir", path: root } : undefined;
    },
  };
}

async function* walk(root: string, rel: string, prefix: string, signal: AbortSignal | undefined): AsyncGenerator<StorageObjectInfo> {
  throwIfAborted(signal);
  const dir = rel === "" ? root : join(root, rel);
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    const key = rel === "" ? entry.name : `${rel}/${entry.name}`;
    if (entry.isDirectory()) {
      if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) yield* walk(root, key, prefix, signal);
    } else if (entry.isFile() && key.startsWith(prefix) && !/\.tmp-[0-9a-f]{12}$/.test(entry.name)) {
      const info = await fsStat(join(root, key)).catch(() => undefined);
      if (info) yield { key, size: info.size, modifiedAt: info.mtime };
    }
  }
}

async function pruneEmptyParents(dir: string, root: string): Promise<void> {
  let current = dir;
  while (current.startsWith(root + sep)) {
    try {
      await rmdir(current);
    } catch {
      return;
    }
    current = dirname(current);
  }
}

function storageError(what: string, cause: unknown, signal: AbortSignal | undefined): RunctlError {
  if (signal?.aborted) return new RunctlError("ABORTED", `Aborted: ${what}.`, { cause });
  return new RunctlError("STORAGE_ERROR", `Storage failed to ${what}: ${(cause as Error).message}`, { cause, retryable: true });
}
