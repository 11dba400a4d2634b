import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { dirname, join, resolve, sep } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { RunctlError, throwIfAborted } from "../errors/runctl-error.js";
import type { Storage } from "../storage/types.js";
import { checkpointKeys, checkpointManifestSchema, type CheckpointManifest } from "./manifest.js";

/** Options accepted by checkpoint calls. */
export interface CheckpointCallOptions {
  /** Aborts with ABORTED. */
  readonly signal?: AbortSignal;
}

/**
 * One committed checkpoint (its manifest exists). Bytes are verified on download.
 *
 * @example
 * ```ts
 * const ckpt = await run.checkpoints().latest();
 * if (ckpt) await ckpt.download("./restored");
 * ```
 */
export interface Checkpoint {
  /** The run that committed it. */
  readonly runId: string;
  /** The storage it lives in. */
  readonly storage: Storage;
  /** The checkpoint's name (its file or folder name in the trainer's checkpoint folder). */
  readonly name: string;
  /** Training step, when known. */
  readonly step: number | null;
  /** Commit number within its run (newest is highest). */
  readonly seq: number;
  /** When it was committed (the manifest's `createdAt`). */
  readonly createdAt: Date;
  /** Total size of its files in bytes. */
  readonly totalBytes: number;
  /** Its parsed `manifest.json`: every file with its size and sha256. */
  readonly manifest: CheckpointManifest;
  /**
   * Downloads into `dest` (a `dir` checkpoint's files under `dest/`, a `file` checkpoint as
   * `dest/<name>`), checking every sha256 while streaming. On a mismatch nothing is left behind and
   * CHECKPOINT_CORRUPT is thrown. Returns the local path of the checkpoint.
   */
  download(dest: string, options?: CheckpointCallOptions): Promise<string>;
  /** Re-reads every file from storage and checks size and sha256 against the manifest. */
  verify(options?: CheckpointCallOptions): Promise<CheckpointVerification>;
}

/** What {@link Checkpoint.verify} found. */
export interface CheckpointVerification {
  /** True when every file is present with the manifest's size and sha256 (`problems` is empty). */
  readonly ok: boolean;
  /** Files that are missing or whose bytes differ from the manifest. */
  readonly problems: readonly {
    /** The file's path within the checkpoint, as in the manifest. */
    readonly path: string;
    /** What is wrong, in words (`missing`, a size mismatch, `sha256 differs`). */
    readonly reason: string;
  }[];
}

/**
 * The committed checkpoints of one run in one storage.
 *
 * @example
 * ```ts
 * const store = Runctl.checkpoints(localDir("./ckpt"), runId);
 * for (const c of await store.list()) console.log(c.name, c.step);
 * const used = await store.downloadLatest("./restore"); // falls back past corrupt ones
 * ```
 */
export interface CheckpointStore {
  /** The run whose checkpoints this store reads. */
  readonly runId: string;
  /** Committed checkpoints, oldest first (by commit `seq`). */
  list(options?: CheckpointCallOptions): Promise<Checkpoint[]>;
  /** The checkpoint LATEST names if it is committed, else the newest committed one; undefined if none. */
  latest(options?: CheckpointCallOptions): Promise<Checkpoint | undefined>;
  /** One checkpoint by name; undefined when it is not committed. */
  get(name: string, options?: CheckpointCallOptions): Promise<Checkpoint | undefined>;
  /**
   * Downloads the newest checkpoint whose bytes verify, falling back to older ones past corrupt ones.
   * Throws CHECKPOINT_NOT_FOUND when none verifies.
   */
  downloadLatest(dest: string, options?: CheckpointCallOptions): Promise<{
    /** The checkpoint that was downloaded. */
    checkpoint: Checkpoint;
    /** The local path of the downloaded checkpoint (as {@link Checkpoint.download} returns it). */
    path: string;
    /** Names of newer checkpoints passed over because they were corrupt, newest first. */
    skipped: string[];
  }>;
  /** Deletes all but the newest `keep` checkpoints (manifest first, so readers never see half of one). */
  prune(options: CheckpointCallOptions & { readonly keep: number }): Promise<string[]>;
}

/**
 * Opens the checkpoints of `runId` in `storage`.
 *
 * @example
 * ```ts
 * const latest = await checkpointStore(localDir("./ckpt"), "20261121-151300-k3f9a2").latest();
 * ```
 */
export function checkpointStore(storage: Storage, runId: string): CheckpointStore {
  const readManifest = async (name: string, signal?: AbortSignal): Promise<CheckpointManifest | undefined> => {
    const key = checkpointKeys.manifest(runId, name);
    let text: string;
    try {
      text = await readText(storage, key, signal);
    } catch (err) {
      if (err instanceof RunctlError && err.code === "NOT_FOUND") return undefined;
      throw err;
    }
    const parsed = checkpointManifestSchema.safeParse(safeJson(text));
    if (!parsed.success) {
      throw new RunctlError("CHECKPOINT_CORRUPT", `The manifest of checkpoint ${name} of run ${runId} is not valid: ${parsed.error.message}`);
    }
    return parsed.data;
  };

  const toCheckpoint = (manifest: CheckpointManifest): Checkpoint => ({
    runId,
    storage,
    name: manifest.name,
    step: manifest.step,
    seq: manifest.seq,
    createdAt: new Date(manifest.createdAt),
    totalBytes: manifest.totalBytes,
    manifest,
    download: (dest, options) => downloadCheckpoint(storage, manifest, dest, options?.signal),
    verify: (options) => verifyCheckpoint(storage, manifest, options?.signal),
  });

  const list = async (options?: CheckpointCallOptions): Promise<Checkpoint[]> => {
    const names = new Set<string>();
    const prefix = checkpointKeys.checkpointsPrefix(runId);
    for await (const object of storage.list(prefix, options)) {
      const rest = object.key.slice(prefix.length);
      const match = /^([^/]+)\/manifest\.json$/.exec(rest);
      if (match?.[1]) names.add(match[1]);
    }
    const manifests = await Promise.all([...names].map((name) => readManifest(name, options?.signal)));
    return manifests
      .filter((m): m is CheckpointManifest => m !== undefined)
      .sort((a, b) => a.seq - b.seq)
      .map(toCheckpoint);
  };

  return {
    runId,
    list,
    async get(name, options) {
      const manifest = await readManifest(name, options?.signal);
      return manifest ? toCheckpoint(manifest) : undefined;
    },
    async latest(options) {
      let named: string | undefined;
      try {
        named = (await readText(storage, checkpointKeys.latest(runId), options?.signal)).trim();
      } catch (err) {
        if (!(err instanceof RunctlError && err.code === "NOT_FOUND")) throw err;
      }
      if (named) {
        const manifest = await readManifest(named, options?.signal).catch(() => undefined);
        if (manifest) return toCheckpoint(manifest);
      }
      // LATEST is missing or names a checkpoint whose manifest is gone: the newest committed one wins.
      const all = await list(options);
      return all[all.length - 1];
    },
    async downloadLatest(dest, options) {
      const all = (await list(options)).reverse();
      const skipped: string[] = [];
      for (const checkpoint of all) {
        try {
          const path = await checkpoint.download(dest, options);
          return { checkpoint, path, skipped };
        } catch (err) {
          if (err instanceof RunctlError && err.code === "CHECKPOINT_CORRUPT") {
            skipped.push(checkpoint.name);
            continue;
          }
          throw err;
        }
      }
      throw new RunctlError("CHECKPOINT_NOT_FOUND", `Run ${runId} has no checkpoint that verifies in ${storage.uri}${skipped.length ? ` (corrupt: ${skipped.join(", ")})` : ""}.`);
    },
    async prune(options) {
      if (!Number.isInteger(options.keep) || options.keep < 1) {
        throw new RunctlError("INVALID_ARGUMENT", `prune keep must be an integer >= 1, got ${options.keep}.`);
      }
      const all = await list(options);
      const doomed = all.slice(0, Math.max(0, all.length - options.keep));
      for (const checkpoint of doomed) {
        await storage.delete(checkpointKeys.manifest(runId, checkpoint.name), options);
        const keys: string[] = [];
        for await (const object of storage.list(checkpointKeys.filesPrefix(runId, checkpoint.name), options)) keys.push(object.key);
        await storage.delete(keys, options);
      }
      return doomed.map((c) => c.name);
    },
  };
}

async function readText(storage: Storage, key: string, signal: AbortSignal | undefined): Promise<string> {
  const stream = await storage.get(key, signal ? { signal } : {});
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks).toString("utf8");
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Resolves a manifest path under `root`, refusing anything that escapes it. */
function safeJoin(root: string, rel: string): string {
  const target = resolve(root, rel);
  if (rel.startsWith("/") || rel.split("/").includes("..") || !(target === root || target.startsWith(root + sep))) {
    throw new RunctlError("UNSAFE_PATH", `Checkpoint file path ${JSON.stringify(rel)} escapes the destination.`);
  }
  return target;
}

async function downloadCheckpoint(storage: Storage, manifest: CheckpointManifest, dest: string, signal?: AbortSignal): Promise<string> {
  const root = resolve(dest);
  const written: string[] = [];
  try {
    for (const file of manifest.files) {
      throwIfAborted(signal);
      const target = safeJoin(root, file.path);
      await mkdir(dirname(target), { recursive: true });
      const tmp = `${target}.runctl-${randomBytes(4).toString("hex")}`;
      written.push(tmp);
      const hash = createHash("sha256");
      let size = 0;
      const source = await storage.get(checkpointKeys.file(manifest.runId, manifest.name, file.path), signal ? { signal } : {});
      await pipeline(
        source,
        new Transform({
          transform(chunk: Buffer, _enc, done) {
            hash.update(chunk);
            size += chunk.length;
            done(null, chunk);
          },
        }),
        createWriteStream(tmp),
      );
      const sha256 = hash.digest("hex");
      if (size !== file.size || sha256 !== file.sha256) {
        throw new RunctlError(
          "CHECKPOINT_CORRUPT",
          `Checkpoint ${manifest.name} of run ${manifest.runId}: ${file.path} has ${size} bytes sha256 ${sha256.slice(0, 12)}…, the manifest says ${file.size} bytes sha256 ${file.sha256.slice(0, 12)}….`,
          { details: { name: manifest.name, path: file.path } },
        );
      }
      await rename(tmp, target);
      written[written.length - 1] = target;
    }
  } catch (err) {
    // Never leave a half-downloaded checkpoint that looks usable.
    await Promise.all(written.map((p) => rm(p, { force: true })));
    // A file the manifest lists but storage lacks makes the checkpoint corrupt (readers fall back).
    if ((err as { code?: string }).code === "NOT_FOUND") {
      throw new RunctlError("CHECKPOINT_CORRUPT", `Checkpoint ${manifest.name} is missing a file: ${(err as Error).message}`, { cause: err });
    }
    if (err instanceof RunctlError) throw err;
    if (signal?.aborted) throw new RunctlError("ABORTED", "Checkpoint download aborted.", { cause: err });
    throw new RunctlError("STORAGE_ERROR", `Downloading checkpoint ${manifest.name} failed: ${(err as Error).message}`, { cause: err, retryable: true });
  }
  return manifest.kind === "file" ? join(root, manifest.name) : root;
}

async function verifyCheckpoint(storage: Storage, manifest: CheckpointManifest, signal?: AbortSignal): Promise<CheckpointVerification> {
  const problems: { path: string; reason: string }[] = [];
  for (const file of manifest.files) {
    throwIfAborted(signal);
    let stream;
    try {
      stream = await storage.get(checkpointKeys.file(manifest.runId, manifest.name, file.path), signal ? { signal } : {});
    } catch {
      problems.push({ path: file.path, reason: "missing" });
      continue;
    }
    const hash = createHash("sha256");
    let size = 0;
    for await (const chunk of stream) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    const sha256 = hash.digest("hex");
    if (size !== file.size) problems.push({ path: file.path, reason: `size ${size}, expected ${file.size}` });
    else if (sha256 !== file.sha256) problems.push({ path: file.path, reason: "sha256 differs" });
  }
  return { ok: problems.length === 0, problems };
}
