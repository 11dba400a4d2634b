import type { ManifestEntry } from "./manifest.js";

/**
 * What the machine knows about one file: the value type of the agent's `manifest` output.
 *
 * @defaultValue none (every field is required)
 * @example
 * ```ts
 * const info: RemoteFileInfo = { size: 120, mode: 0o644, sha256: "ab12..." };
 * ```
 */
export interface RemoteFileInfo {
  /** Size in bytes. */
  readonly size: number;
  /** Permission bits. */
  readonly mode: number;
  /** Hex sha256. */
  readonly sha256: string;
}

/**
 * A manifest as the agent reports it: posix relative path -> facts.
 *
 * @example
 * ```ts
 * const remote: RemoteFiles = { "train.py": { size: 120, mode: 0o644, sha256: "ab12..." } };
 * ```
 *
 * @defaultValue `{}` for a machine without the folder
 */
export type RemoteFiles = Readonly<Record<string, RemoteFileInfo>>;

/**
 * The work a sync has to do, from {@link diffManifests}.
 *
 * @defaultValue none (every field is always set)
 * @example
 * ```ts
 * const { upload, delete: gone, uploadBytes }: SyncDiff = diffManifests(local, remote);
 * ```
 */
export interface SyncDiff {
  /** Paths to send: new on this side, or different in size, sha256 or mode. Sorted. */
  readonly upload: readonly string[];
  /** Paths on the machine that are not in the local manifest. Sorted. */
  readonly delete: readonly string[];
  /** Sum of the sizes of `upload`. */
  readonly uploadBytes: number;
}

/**
 * Compares the local manifest with the machine's. The remote folder is a mirror that runctl owns: every
 * remote file not in the local manifest is deleted, including files the local rules exclude (changing
 * the ignore rules removes what is now excluded, so the machine runs exactly what a dry run listed).
 * A remote file whose path is now a local folder is not listed: writing the folder's files replaces it.
 * A local entry without a sha256 (not hashed: the machine lacks it or has another size) is sent.
 *
 * @defaultValue no defaults: both manifests are required (use `{}` for an empty remote)
 * @example
 * ```ts
 * const { upload, delete: gone } = diffManifests(manifest.entries, remoteFiles);
 * if (upload.length === 0 && gone.length === 0) console.log("up to date");
 * ```
 */
export function diffManifests(local: readonly (Omit<ManifestEntry, "sha256"> & { readonly sha256?: string | undefined })[], remote: RemoteFiles): SyncDiff {
  const upload: string[] = [];
  let uploadBytes = 0;
  const seen = new Set<string>();
  for (const entry of local) {
    seen.add(entry.path);
    const other = Object.hasOwn(remote, entry.path) ? remote[entry.path] : undefined;
    if (other === undefined || other.size !== entry.size || other.sha256 !== entry.sha256 || other.mode !== entry.mode) {
      upload.push(entry.path);
      uploadBytes += entry.size;
    }
  }
  // A remote file where the local tree now has a folder ("a" -> "a/b") is replaced by writing "a/b";
  // listing "a" for deletion too would make the agent remove the new folder after writing it.
  const localDirs = new Set<string>();
  for (const entry of local) {
    for (let i = entry.path.indexOf("/"); i > 0; i = entry.path.indexOf("/", i + 1)) localDirs.add(entry.path.slice(0, i));
  }
  const toDelete = Object.keys(remote).filter((path) => !seen.has(path) && !localDirs.has(path));
  upload.sort(byCodeUnit);
  toDelete.sort(byCodeUnit);
  return { upload, delete: toDelete, uploadBytes };
}

function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
