import type { Manifest } from "./manifest.js";
import type { TreeScan } from "./scan-tree.js";
import type { SyncPhase, SyncResult, SyncTreeOptions } from "./sync-tree.js";

/**
 * One attempt of {@link syncTree} after the local scan passed the size guard: what the two ways of
 * talking to the agent (one call over a byte stream, or two calls) share.
 *
 * @defaultValue none (every field is required)
 * @example
 * ```ts
 * const attempt: SyncAttempt = { options, scan, progress: () => {}, result: (m, files, bytes, deleted) => summary };
 * ```
 */
export interface SyncAttempt {
  /** The caller's options. */
  readonly options: SyncTreeOptions;
  /** The local tree, scanned and within the limits. */
  readonly scan: TreeScan;
  /** Reports progress (counts default to 0). */
  readonly progress: (phase: SyncPhase, files?: number, totalFiles?: number, bytes?: number, totalBytes?: number) => void;
  /** The outcome, from the local manifest and what this attempt sent and deleted. */
  readonly result: (manifest: Manifest, uploadedFiles: number, uploadedBytes: number, deletedFiles: number) => SyncResult;
}

/**
 * `{ signal }` when there is one, else `{}` (for options under `exactOptionalPropertyTypes`).
 *
 * @defaultValue returns `{}` for undefined
 * @example
 * ```ts
 * transport.exec(argv, withSignal(options.signal));
 * ```
 */
export function withSignal(signal: AbortSignal | undefined): { signal?: AbortSignal | undefined } {
  return signal ? { signal } : {};
}
