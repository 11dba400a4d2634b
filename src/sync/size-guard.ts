import { RunctlError } from "../errors/runctl-error.js";
import { formatBytes } from "../util/format-bytes.js";

export { formatBytes };

/**
 * Default cap on the bytes one sync may send: code trees are small, datasets belong in `.data()`.
 *
 * @defaultValue 1 GiB (1_073_741_824)
 * @example
 * ```ts
 * await syncTree({ ...options, maxBytes: 4 * DEFAULT_MAX_BYTES });
 * ```
 */
export const DEFAULT_MAX_BYTES = 1024 ** 3;

/**
 * Default cap on the number of files one sync may hold.
 *
 * @defaultValue 50_000
 * @example
 * ```ts
 * await syncTree({ ...options, maxFiles: 2 * DEFAULT_MAX_FILES });
 * ```
 */
export const DEFAULT_MAX_FILES = 50_000;

/** How many entries of each kind {@link largestEntries} lists. @defaultValue 10 */
const LARGEST_COUNT = 10;

/**
 * A file or a top-level folder, with its total size.
 *
 * @defaultValue none (every field is required)
 * @example
 * ```ts
 * const e: LargestEntry = { path: "data/", bytes: 3 * 2 ** 30, files: 1200 };
 * ```
 */
export interface LargestEntry {
  /** Posix path relative to the root; folders end with `/`. */
  readonly path: string;
  /** Total bytes (a folder: everything synced below it). */
  readonly bytes: number;
  /** Number of files (1 for a file). */
  readonly files: number;
}

/**
 * Where the largest bytes and file counts are, from `largestEntries()`.
 *
 * @defaultValue none (both lists are always set, possibly empty)
 * @example
 * ```ts
 * const { files, folders }: LargestEntries = largestEntries(manifest.entries);
 * ```
 */
export interface LargestEntries {
  /** The largest files, biggest first. */
  readonly files: readonly LargestEntry[];
  /** The root's subfolders by total bytes (or by file count when `byCount`), biggest first. */
  readonly folders: readonly LargestEntry[];
}

/**
 * The `count` largest files and top-level folders of a list of files, for size messages and dry runs.
 *
 * @defaultValue count = 10, byCount = false
 * @example
 * ```ts
 * const { files, folders } = largestEntries(manifest.entries);
 * console.log(files[0]?.path, folders[0]?.bytes);
 * ```
 */
export function largestEntries(
  entries: readonly { readonly path: string; readonly size: number }[],
  count: number = LARGEST_COUNT,
  byCount = false,
): LargestEntries {
  const top: { path: string; size: number }[] = [];
  const folders = new Map<string, { bytes: number; files: number }>();
  for (const e of entries) {
    insertTop(top, e, count);
    const slash = e.path.indexOf("/");
    if (slash > 0) {
      const dir = `${e.path.slice(0, slash)}/`;
      const agg = folders.get(dir) ?? { bytes: 0, files: 0 };
      agg.bytes += e.size;
      agg.files += 1;
      folders.set(dir, agg);
    }
  }
  const folderList = [...folders].map(([path, agg]) => ({ path, bytes: agg.bytes, files: agg.files }));
  folderList.sort((a, b) => (byCount ? b.files - a.files : b.bytes - a.bytes) || (a.path < b.path ? -1 : 1));
  return { files: top.map((e) => ({ path: e.path, bytes: e.size, files: 1 })), folders: folderList.slice(0, count) };
}

// Keeps `top` sorted by size (desc) and at most `count` long, without sorting 50,000 entries.
function insertTop(top: { path: string; size: number }[], e: { path: string; size: number }, count: number): void {
  if (top.length >= count && (top[top.length - 1]?.size ?? 0) >= e.size) return;
  let i = top.length;
  while (i > 0 && (top[i - 1]?.size ?? 0) < e.size) i--;
  top.splice(i, 0, { path: e.path, size: e.size });
  if (top.length > count) top.pop();
}

/**
 * The limits a sync is checked against.
 *
 * @defaultValue `{}`: 1 GiB and 50,000 files
 * @example
 * ```ts
 * const limits: SizeLimits = { maxBytes: 4 * 2 ** 30, maxFiles: 200_000 };
 * ```
 */
export interface SizeLimits {
  /** Most bytes. @defaultValue {@link DEFAULT_MAX_BYTES} */
  readonly maxBytes?: number | undefined;
  /** Most files. @defaultValue {@link DEFAULT_MAX_FILES} */
  readonly maxFiles?: number | undefined;
}

/**
 * Returns a SYNC_TOO_LARGE error (not thrown) when the tree exceeds a limit, naming the largest files
 * and folders and how to exclude them; undefined when it fits. `truncated` says the scan stopped early
 * because it already had too many files.
 *
 * @defaultValue limits = `{ maxBytes: DEFAULT_MAX_BYTES, maxFiles: DEFAULT_MAX_FILES }`, truncated = false
 * @example
 * ```ts
 * const err = checkSizeLimits("/src", scan.files, { maxBytes: 1e9 });
 * if (err) throw err;
 * ```
 */
export function checkSizeLimits(
  root: string,
  entries: readonly { readonly path: string; readonly size: number }[],
  limits: SizeLimits = {},
  truncated = false,
): RunctlError | undefined {
  const maxBytes = limits.maxBytes ?? DEFAULT_MAX_BYTES;
  const maxFiles = limits.maxFiles ?? DEFAULT_MAX_FILES;
  let bytes = 0;
  for (const e of entries) bytes += e.size;
  const files = entries.length;
  if (bytes <= maxBytes && files <= maxFiles && !truncated) return undefined;
  const tooMany = files > maxFiles || truncated;
  const largest = largestEntries(entries, LARGEST_COUNT, tooMany && bytes <= maxBytes);
  const count = `${truncated ? "more than " : ""}${files.toLocaleString("en-US")} files`;
  const lines = [
    `The sync of ${root} is too large: ${formatBytes(bytes)}${truncated ? "+" : ""} in ${count} (limits: ${formatBytes(maxBytes)}, ${maxFiles.toLocaleString("en-US")} files). Nothing was sent.`,
    "Largest files:",
    ...largest.files.map((e) => `  ${formatBytes(e.bytes).padStart(10)}  ${e.path}`),
  ];
  if (largest.folders.length > 0) {
    lines.push("Largest folders:", ...largest.folders.map((e) => `  ${formatBytes(e.bytes).padStart(10)}  ${e.path} (${e.files.toLocaleString("en-US")} files)`));
  }
  lines.push('Exclude what the machine does not need in a .runctlignore file (gitignore syntax, e.g. "data/") or the sync\'s ignore list, or raise maxBytes/maxFiles.');
  return new RunctlError("SYNC_TOO_LARGE", lines.join("\n"), {
    details: { root, bytes, files, truncated, maxBytes, maxFiles, largestFiles: largest.files, largestFolders: largest.folders },
  });
}

