import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { dirname, join, resolve, sep } from "node:path";
import { RunctlError, throwIfAborted } from "../errors/runctl-error.js";
import { downloadToFile, tempFileName } from "../storage/download-to-file.js";
import type { Storage } from "../storage/types.js";
import { checkpointKeys, checkpointManifestSchema, type CheckpointManifest } from "./manifest.js";

/** Options accepted by checkpoint calls. */
export interface CheckpointCallOptions {
  /** Aborts with ABORTED. */
  readonly signal?: AbortSignal | undefined;
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
   * CHECKPOINT_CORRUPT is thrown. If its files vanish because it was pruned or replaced by a newer
   * commit of its name meanwhile (its manifest is gone too), CHECKPOINT_NOT_FOUND is thrown instead.
   * Returns the local path of the checkpoint.
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
   * A checkpoint whose files vanish during the download because retention pruned it (or a newer commit
   * of its name replaced it) is not corrupt: the store lists again and takes the newest complete one.
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
  /** Deletes all but the newest `keep` checkpoints (manifests first, so readers never see half of one). */
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
  /** A generation's manifest; `missing` (pruned or never written) or `invalid` (cut short, or not ours). */
  const readManifest = async (name: string, seq: number, signal?: AbortSignal): Promise<CheckpointManifest | "missing" | "invalid"> => {
    const key = checkpointKeys.manifest(runId, name, seq);
    let text: string;
    try {
      text = await readText(storage, key, signal);
    } catch (err) {
      if (err instanceof RunctlError && err.code === "NOT_FOUND") return "missing";
      throw err;
    }
    // A manifest that does not parse, or names another checkpoint, never finished committing (or is not
    // ours): like a missing one, that generation does not exist, and the name's older one is read
    // instead — the agent's list_manifests does the same. One bad object never hides every checkpoint.
    const parsed = checkpointManifestSchema().safeParse(safeJson(text));
    if (!parsed.success || parsed.data.name !== name || parsed.data.seq !== seq || parsed.data.runId !== runId) return "invalid";
    return parsed.data;
  };

  /** Per name, the generations (commit seqs) that have a manifest key under `prefix`, highest first. */
  const generations = async (prefix: string, options?: CheckpointCallOptions): Promise<Map<string, number[]>> => {
    const base = checkpointKeys.checkpointsPrefix(runId);
    const byName = new Map<string, number[]>();
    for await (const object of storage.list(prefix, options)) {
      const parsed = checkpointKeys.parseManifest(object.key.slice(base.length));
      if (parsed) byName.set(parsed.name, [...(byName.get(parsed.name) ?? []), parsed.seq]);
    }
    for (const seqs of byName.values()) seqs.sort((a, b) => b - a);
    return byName;
  };

  /**
   * The highest generation of `name` whose manifest can still be read (one pruned meanwhile, or cut
   * short, is skipped); `invalid` when the name has manifests but none is valid.
   */
  const newest = async (name: string, seqs: readonly number[], signal?: AbortSignal): Promise<CheckpointManifest | "invalid" | undefined> => {
    let sawInvalid = false;
    for (const seq of seqs) {
      const manifest = await readManifest(name, seq, signal);
      if (manifest === "invalid") sawInvalid = true;
      else if (manifest !== "missing") return manifest;
    }
    return sawInvalid ? "invalid" : undefined;
  };

  /** Whether the generation a manifest was read from still has it (else it was pruned or replaced). */
  const stillCommitted = async (manifest: CheckpointManifest, signal?: AbortSignal): Promise<boolean> =>
    (await readManifest(manifest.name, manifest.seq, signal).catch(() => manifest)) !== "missing";

  const toCheckpoint = (manifest: CheckpointManifest): Checkpoint => ({
    runId,
    storage,
    name: manifest.name,
    step: manifest.step,
    seq: manifest.seq,
    createdAt: new Date(manifest.createdAt),
    totalBytes: manifest.totalBytes,
    manifest,
    download: async (dest, options) => {
      try {
        return await downloadCheckpoint(storage, manifest, dest, options?.signal);
      } catch (err) {
        if (err instanceof RunctlError && isMissingFile(err) && !(await stillCommitted(manifest, options?.signal))) {
          // Its manifest is gone too: retention pruned it, or a newer commit of its name replaced it,
          // while it downloaded. That is not corruption (the stored checkpoints are all whole).
          throw new RunctlError(
            "CHECKPOINT_NOT_FOUND",
            `Checkpoint ${manifest.name} (seq ${manifest.seq}) of run ${runId} was pruned or replaced by a newer commit while it downloaded; read latest() again.`,
            { cause: err, details: { name: manifest.name, seq: manifest.seq, vanished: true } },
          );
        }
        throw err;
      }
    },
    verify: (options) => verifyCheckpoint(storage, manifest, options?.signal),
  });

  const list = async (options?: CheckpointCallOptions): Promise<Checkpoint[]> => {
    const byName = await generations(checkpointKeys.checkpointsPrefix(runId), options);
    const manifests = await Promise.all([...byName].map(([name, seqs]) => newest(name, seqs, options?.signal)));
    return manifests
      .filter((m): m is CheckpointManifest => m !== undefined && m !== "invalid")
      .sort((a, b) => a.seq - b.seq)
      .map(toCheckpoint);
  };

  const get = async (name: string, options?: CheckpointCallOptions): Promise<Checkpoint | undefined> => {
    if (!name || name.includes("/")) return undefined;
    const seqs = (await generations(checkpointKeys.namePrefix(runId, name), options)).get(name) ?? [];
    const manifest = await newest(name, seqs, options?.signal);
    if (manifest === "invalid") {
      // Asked for by name, a checkpoint whose every manifest is unreadable is reported, not hidden.
      throw new RunctlError("CHECKPOINT_CORRUPT", `Checkpoint ${name} of run ${runId} has no valid manifest in ${storage.uri}.`);
    }
    return manifest ? toCheckpoint(manifest) : undefined;
  };

  return {
    runId,
    list,
    get,
    async latest(options) {
      let named: string | undefined;
      try {
        named = (await readText(storage, checkpointKeys.latest(runId), options?.signal)).trim();
      } catch (err) {
        if (!(err instanceof RunctlError && err.code === "NOT_FOUND")) throw err;
      }
      if (named) {
        const checkpoint = await get(named, options).catch(() => undefined);
        if (checkpoint) return checkpoint;
      }
      // LATEST is missing or names a checkpoint whose manifest is gone: the newest committed one wins.
      const all = await list(options);
      return all[all.length - 1];
    },
    async downloadLatest(dest, options) {
      const skipped: string[] = [];
      const tried = new Set<string>();
      for (;;) {
        let relist = false;
        for (const checkpoint of (await list(options)).reverse()) {
          const id = `${checkpoint.name}\0${checkpoint.seq}`;
          if (tried.has(id)) continue;
          tried.add(id);
          try {
            const path = await checkpoint.download(dest, options);
            return { checkpoint, path, skipped };
          } catch (err) {
            if (err instanceof RunctlError && err.code === "CHECKPOINT_NOT_FOUND" && err.details["vanished"] === true) {
              // Pruned (or replaced by a newer commit of its name) while we read it: not corruption.
              // List again and take the newest complete checkpoint there is now.
              relist = true;
              break;
            }
            if (!(err instanceof RunctlError && err.code === "CHECKPOINT_CORRUPT")) throw err;
            skipped.push(checkpoint.name);
          }
        }
        if (!relist) break;
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
        // Every generation's manifest first, so readers never see half of one; then the bytes.
        const prefix = checkpointKeys.namePrefix(runId, checkpoint.name);
        const keys: string[] = [];
        for await (const object of storage.list(prefix, options)) keys.push(object.key);
        const manifests = keys.filter((k) => checkpointKeys.parseManifest(k.slice(checkpointKeys.checkpointsPrefix(runId).length)));
        await storage.delete(manifests, options);
        await storage.delete(keys.filter((k) => !manifests.includes(k)), options);
      }
      return doomed.map((c) => c.name);
    },
  };
}

/** A download failed because a file the manifest lists is not in storage (see downloadCheckpoint). */
function isMissingFile(err: RunctlError): boolean {
  return err.code === "CHECKPOINT_CORRUPT" && err.details["missing"] === true;
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
      // A hidden name the next download into this folder sweeps if this process is killed (decision 0030);
      // the storage's own download (S3: parallel ranged GETs), then one read of the file for its hash.
      const tmp = join(dirname(target), tempFileName(target));
      written.push(tmp);
      await downloadToFile(storage, checkpointKeys.file(manifest.runId, manifest.name, manifest.seq, file.path), tmp, signal ? { signal } : {});
      const { size, sha256 } = await sha256OfFile(tmp, signal);
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
      throw new RunctlError("CHECKPOINT_CORRUPT", `Checkpoint ${manifest.name} is missing a file: ${(err as Error).message}`, {
        cause: err,
        details: { name: manifest.name, seq: manifest.seq, missing: true },
      });
    }
    if (err instanceof RunctlError) throw err;
    if (signal?.aborted) throw new RunctlError("ABORTED", "Checkpoint download aborted.", { cause: err });
    throw new RunctlError("STORAGE_ERROR", `Downloading checkpoint ${manifest.name} failed: ${(err as Error).message}`, { cause: err, retryable: true });
  }
  return manifest.kind === "file" ? join(root, manifest.name) : root;
}

/** Bytes and SHA-256 of everything `source` yields. */
async function sha256Of(source: AsyncIterable<unknown>): Promise<{ size: number; sha256: string }> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of source as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { size, sha256: hash.digest("hex") };
}

/** Bytes and SHA-256 of a local file, read once. */
function sha256OfFile(path: string, signal: AbortSignal | undefined): Promise<{ size: number; sha256: string }> {
  return sha256Of(createReadStream(path, { highWaterMark: 1024 * 1024, ...(signal ? { signal } : {}) }));
}

async function verifyCheckpoint(storage: Storage, manifest: CheckpointManifest, signal?: AbortSignal): Promise<CheckpointVerification> {
  const problems: { path: string; reason: string }[] = [];
  for (const file of manifest.files) {
    throwIfAborted(signal);
    let stream;
    try {
      stream = await storage.get(checkpointKeys.file(manifest.runId, manifest.name, manifest.seq, file.path), signal ? { signal } : {});
    } catch {
      problems.push({ path: file.path, reason: "missing" });
      continue;
    }
    const { size, sha256 } = await sha256Of(stream);
    if (size !== file.size) problems.push({ path: file.path, reason: `size ${size}, expected ${file.size}` });
    else if (sha256 !== file.sha256) problems.push({ path: file.path, reason: "sha256 differs" });
  }
  return { ok: problems.length === 0, problems };
}
