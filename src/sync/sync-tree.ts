import { posix } from "node:path";
import pRetry from "p-retry";
import { RunctlError, throwIfAborted } from "../errors/runctl-error.js";
import type { Storage } from "../storage/types.js";
import type { Transport } from "../transport/types.js";
import { hashScan, manifestDigest } from "./manifest.js";
import { scanTree } from "./scan-tree.js";
import { DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, checkSizeLimits, largestEntries, type LargestEntries } from "./size-guard.js";
import type { SyncAttempt } from "./sync-attempt.js";
import { syncInOneCall } from "./sync-one-call.js";
import { syncInTwoCalls } from "./sync-two-calls.js";

/**
 * The stage a sync is in, reported through {@link SyncTreeOptions.onProgress}.
 *
 * @defaultValue none (a union of literals)
 * @example
 * ```ts
 * const phase: SyncPhase = "uploading";
 * ```
 */
export type SyncPhase = "scanning" | "hashing" | "comparing" | "uploading" | "applying" | "done";

/**
 * A progress report. Counts refer to the phase: hashed files while hashing, packed files while uploading.
 *
 * @defaultValue none (every field is always set; counts are 0 where they do not apply)
 * @example
 * ```ts
 * onProgress: (p: SyncProgress) => console.log(p.phase, `${p.files}/${p.totalFiles}`),
 * ```
 */
export interface SyncProgress {
  /** What is happening. */
  readonly phase: SyncPhase;
  /** Files done in this phase. */
  readonly files: number;
  /** Files this phase will handle. */
  readonly totalFiles: number;
  /** Content bytes sent so far (uploading), else 0. */
  readonly bytes: number;
  /** Content bytes this phase will send (uploading), else 0. */
  readonly totalBytes: number;
}

/**
 * What decides which local files are synced; shared by {@link syncTree} and {@link planSync}.
 *
 * @defaultValue only `localDir` is required; see each field
 * @example
 * ```ts
 * const selection: SyncSelection = { localDir: "./", ignore: ["data/"], maxBytes: 2 * 2 ** 30 };
 * ```
 */
export interface SyncSelection {
  /** The local folder to sync. It is the sync root: nothing above it is sent (rust-lessons F8). */
  readonly localDir: string;
  /** Extra patterns (gitignore syntax, relative to `localDir`), applied after every ignore file. @defaultValue `[]` */
  readonly ignore?: readonly string[] | undefined;
  /** Excludes added to the defaults, e.g. the checkpoint folder. @defaultValue `[]` */
  readonly extraExcludes?: readonly string[] | undefined;
  /** Refuse (SYNC_TOO_LARGE) above this many bytes. @defaultValue 1 GiB */
  readonly maxBytes?: number | undefined;
  /** Refuse (SYNC_TOO_LARGE) above this many files. @defaultValue 50_000 */
  readonly maxFiles?: number | undefined;
  /** JSON file caching local hashes by (path, size, mtime, inode), e.g. `~/.runctl/cache/sync-hashes.json`. @defaultValue undefined (no cache) */
  readonly hashCachePath?: string | undefined;
  /** Cancels with ABORTED. */
  readonly signal?: AbortSignal | undefined;
}

/**
 * Options of {@link syncTree}.
 *
 * @defaultValue see each field; `transport`, `python`, `agentPath`, `localDir` and `remoteDir` are required
 * @example
 * ```ts
 * const options: SyncTreeOptions = {
 *   transport: localTransport(), python: "python3", agentPath: "/home/me/.runctl/agent/runctl-agent.py",
 *   localDir: "./", remoteDir: "/home/me/.runctl/work/proj",
 * };
 * ```
 */
export interface SyncTreeOptions extends SyncSelection {
  /** How to reach the machine. */
  readonly transport: Transport;
  /** Python interpreter on the machine that runs the agent, e.g. `"python3"`. */
  readonly python: string;
  /** Absolute path of the runctl agent file on the machine. */
  readonly agentPath: string;
  /**
   * Absolute folder on the machine that becomes an exact mirror of the local tree. runctl owns it:
   * every file in it that is not in the local manifest is deleted. Never point it at a folder with
   * other data (such as a home directory).
   */
  readonly remoteDir: string;
  /**
   * Send the tar through storage instead of the command's stdin, for machines reached without a
   * byte stream (SSM): it is uploaded under `prefix`, fetched and applied by the agent (with the
   * storage's machine credentials, in memory), then deleted. @defaultValue undefined (stdin)
   */
  readonly staging?: { readonly storage: Storage; readonly prefix?: string | undefined } | undefined;
  /** Called as the sync progresses. @defaultValue undefined */
  readonly onProgress?: ((progress: SyncProgress) => void) | undefined;
  /**
   * Extra attempts after a retryable failure: a local file that changed while it was sent, or a
   * retryable transport error (dropped connection). Each attempt rebuilds both manifests, so it resumes
   * where the last one stopped. @defaultValue 2
   */
  readonly retries?: number | undefined;
}

/**
 * The outcome of `syncTree()`.
 *
 * @defaultValue none (every field is always set)
 * @example
 * ```ts
 * const r: SyncResult = await syncTree(options);
 * console.log(`${r.uploadedFiles}/${r.files} files sent in ${r.durationMs} ms`);
 * ```
 */
export interface SyncResult {
  /** Files in the synced tree (local manifest). */
  readonly files: number;
  /** Bytes in the synced tree. */
  readonly bytes: number;
  /** Files sent in the last attempt (0 for a no-op). */
  readonly uploadedFiles: number;
  /** Content bytes sent in the last attempt. */
  readonly uploadedBytes: number;
  /** Files deleted on the machine. */
  readonly deletedFiles: number;
  /** Wall time of the whole call, retries included. */
  readonly durationMs: number;
  /** `manifestDigest()` of the tree now on the machine. */
  readonly digest: string;
  /** Skipped symlinks and special files, for people. */
  readonly warnings: readonly string[];
}

/**
 * Makes `remoteDir` on the machine an exact, verified copy of `localDir`'s sync manifest:
 * 1. scans the local tree (ignore rules, no symlinks) and refuses a tree over `maxBytes`/`maxFiles`
 *    with SYNC_TOO_LARGE before reading a file or touching the machine;
 * 2. over a transport with a two-way byte stream (SSH, local): ONE agent call, `agent sync remoteDir`,
 *    started while the files are hashed (cached by path, size, mtime, inode); it prints the machine's
 *    manifest, then a diff decides: nothing differs and stdin is closed (a no-op), or the tar of the
 *    changed files streams on the same call, with the full manifest as `expect`;
 *    without one (SSM, staging): `agent manifest remoteDir`, then `agent sync-apply remoteDir`;
 * 3. the agent writes atomically, deletes vanished files, and verifies the whole folder (exit 6:
 *    SYNC_VERIFY_FAILED with the mismatches; exit 7: UNSAFE_PATH; a stream cut short is never applied
 *    as complete).
 * A file edited behind runctl's back on the machine has a different hash, so the next sync repairs it.
 *
 * @defaultValue maxBytes = 1 GiB, maxFiles = 50_000, retries = 2, no hash cache
 * @example
 * ```ts
 * const result = await syncTree({
 *   transport: localTransport(), python: "python3", agentPath: "/home/me/.runctl/agent/runctl-agent.py",
 *   localDir: "./", remoteDir: "/home/me/.runctl/work/proj", ignore: ["data/"],
 * });
 * console.log(`${result.uploadedFiles} files sent, ${result.deletedFiles} deleted`);
 * ```
 */
export async function syncTree(options: SyncTreeOptions): Promise<SyncResult> {
  const started = performance.now();
  validateRemoteDir(options.remoteDir);
  const retries = options.retries ?? 2;
  try {
    // p-retry, as every other retry in runctl: a retryable RunctlError (a dropped connection, a
    // local file that changed while it was packed) is repeated after 250 ms, 500 ms, ...
    return await pRetry(() => syncOnce(options, started), {
      retries,
      minTimeout: 250,
      factor: 2,
      randomize: false,
      signal: options.signal,
      shouldRetry: ({ error }) => error instanceof RunctlError && error.retryable,
    });
  } catch (error) {
    throwIfAborted(options.signal);
    throw error;
  }
}

/**
 * A dry run of a sync, from `planSync()`.
 *
 * @defaultValue `digest` and `tooLarge` are absent when not computed / not exceeded
 * @example
 * ```ts
 * const plan: SyncPlan = await planSync({ localDir: "./" });
 * if (plan.tooLarge) console.warn(plan.tooLarge);
 * ```
 */
export interface SyncPlan {
  /** The absolute local root. */
  readonly root: string;
  /** Files that would be synced. */
  readonly files: number;
  /** Their total bytes. */
  readonly bytes: number;
  /** Every file that would be synced (sha256 only when hashed), sorted by path. */
  readonly entries: readonly { readonly path: string; readonly size: number; readonly mode: number; readonly sha256?: string | undefined }[];
  /** The largest files and top-level folders. */
  readonly largest: LargestEntries;
  /** `manifestDigest()` of the tree, when it was hashed. */
  readonly digest?: string | undefined;
  /** Skipped symlinks and special files. */
  readonly warnings: readonly string[];
  /** When the tree is over a limit: the SYNC_TOO_LARGE message a real sync would fail with. */
  readonly tooLarge?: string | undefined;
}

/**
 * Options of {@link planSync}.
 *
 * @defaultValue see each field; only `localDir` is required
 * @example
 * ```ts
 * const options: PlanSyncOptions = { localDir: "./", ignore: ["data/"], hash: false };
 * ```
 */
export interface PlanSyncOptions extends SyncSelection {
  /** Hash the files too (needed for `digest`; fast with a hash cache). Never done for a too-large tree. @defaultValue true */
  readonly hash?: boolean | undefined;
}

/**
 * The sync part of a dry run: which files would be synced, their sizes, the largest entries and
 * whether the tree is over the limits. Reads only local files; never contacts a machine and never
 * throws SYNC_TOO_LARGE (it reports `tooLarge`). Throws SYNC_DIR_NOT_FOUND for a missing folder.
 *
 * @defaultValue hash = true, maxBytes = 1 GiB, maxFiles = 50_000
 * @example
 * ```ts
 * const plan = await planSync({ localDir: "./", ignore: ["data/"] });
 * console.log(plan.files, plan.bytes, plan.largest.files.slice(0, 3), plan.tooLarge ?? "fits");
 * ```
 */
export async function planSync(options: PlanSyncOptions): Promise<SyncPlan> {
  const maxFiles = options.maxFiles ?? DEFAULT_MAX_FILES;
  const scan = await scanTree(options.localDir, { ...selectionOf(options), stopAfterFiles: maxFiles });
  const tooLarge = checkSizeLimits(scan.root, scan.files, { maxBytes: options.maxBytes ?? DEFAULT_MAX_BYTES, maxFiles }, scan.truncated);
  if (tooLarge || options.hash === false) {
    return {
      root: scan.root,
      files: scan.files.length,
      bytes: scan.totalBytes,
      entries: scan.files.map((f) => ({ path: f.path, size: f.size, mode: f.mode })),
      largest: largestEntries(scan.files),
      warnings: scan.warnings,
      ...(tooLarge ? { tooLarge: tooLarge.message } : {}),
    };
  }
  const manifest = await hashScan(scan, hashOptionsOf(options));
  return {
    root: manifest.root,
    files: manifest.entries.length,
    bytes: manifest.totalBytes,
    entries: manifest.entries.map((e) => ({ path: e.path, size: e.size, mode: e.mode, sha256: e.sha256 })),
    largest: largestEntries(manifest.entries),
    digest: manifestDigest(manifest.entries),
    warnings: manifest.warnings,
  };
}

async function syncOnce(options: SyncTreeOptions, started: number): Promise<SyncResult> {
  const progress = (phase: SyncPhase, files = 0, totalFiles = 0, bytes = 0, totalBytes = 0): void =>
    options.onProgress?.({ phase, files, totalFiles, bytes, totalBytes });

  progress("scanning");
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
  const maxFiles = options.maxFiles ?? DEFAULT_MAX_FILES;
  const scan = await scanTree(options.localDir, { ...selectionOf(options), stopAfterFiles: maxFiles });
  // The guard runs before any file is read and before the machine is contacted.
  const tooLarge = checkSizeLimits(scan.root, scan.files, { maxBytes, maxFiles }, scan.truncated);
  if (tooLarge) throw tooLarge;

  const attempt: SyncAttempt = {
    options,
    scan,
    progress,
    result: (manifest, uploadedFiles, uploadedBytes, deletedFiles) => ({
      files: manifest.entries.length,
      bytes: manifest.totalBytes,
      uploadedFiles,
      uploadedBytes,
      deletedFiles,
      durationMs: Math.round(performance.now() - started),
      digest: manifestDigest(manifest.entries),
      warnings: manifest.warnings,
    }),
  };
  // One call needs a byte stream both ways while the command runs; SSM and staging have none.
  return options.staging || options.transport.buffered === true ? syncInTwoCalls(attempt) : syncInOneCall(attempt);
}

function selectionOf(options: SyncSelection): { ignore?: readonly string[] | undefined; extraExcludes?: readonly string[] | undefined; signal?: AbortSignal | undefined } {
  return { ignore: options.ignore, extraExcludes: options.extraExcludes, signal: options.signal };
}

function hashOptionsOf(options: SyncSelection): { hashCachePath?: string | undefined; signal?: AbortSignal | undefined } {
  return { hashCachePath: options.hashCachePath, signal: options.signal };
}

/** The remote mirror is wiped of anything not in the local tree, so refuse paths where that is a disaster. */
function validateRemoteDir(remoteDir: string): void {
  const normal = posix.normalize(remoteDir);
  if (!remoteDir.startsWith("/") || normal === "/" || remoteDir.split("/").includes("..")) {
    throw new RunctlError(
      "INVALID_ARGUMENT",
      `remoteDir must be an absolute folder below / without ".." parts (got ${JSON.stringify(remoteDir)}); it becomes an exact mirror of the local tree.`,
      { details: { remoteDir } },
    );
  }
}

