import { lstatSync, type Dirent } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { RunctlError, throwIfAborted } from "../errors/runctl-error.js";
import { IGNORE_FILE_NAMES, IgnoreRules, type IgnoreRulesOptions } from "./ignore-rules.js";
import { createLimiter } from "./limiter.js";

/**
 * Default number of filesystem operations (readdir, lstat, open+read) in flight during a walk.
 *
 * @defaultValue 32
 * @example
 * ```ts
 * await scanTree(".", { concurrency: DEFAULT_FS_CONCURRENCY / 2 });
 * ```
 */
export const DEFAULT_FS_CONCURRENCY = 32;

/** Longest stretch of synchronous lstat calls before the walk yields to the event loop. @defaultValue 8 ms */
const SYNC_SLICE_MS = 8;

/** Most warnings kept by name; the rest are summarised in one line. @defaultValue 50 */
const MAX_WARNINGS = 50;

/**
 * A regular file found by {@link scanTree}, with the facts the hash cache is keyed by.
 *
 * @defaultValue none (every field is required)
 * @example
 * ```ts
 * const f: ScannedFile = { path: "a.py", size: 1, mode: 0o644, mtimeMs: 1.7e12, ino: 42 };
 * ```
 */
export interface ScannedFile {
  /** Posix path relative to the root. */
  readonly path: string;
  /** Size in bytes. */
  readonly size: number;
  /** Permission bits (`mode & 0o777`). */
  readonly mode: number;
  /** Modification time in ms. */
  readonly mtimeMs: number;
  /** Inode number. */
  readonly ino: number;
}

/**
 * The result of {@link scanTree}.
 *
 * @defaultValue none (every field is always set)
 * @example
 * ```ts
 * const { files, totalBytes, warnings }: TreeScan = await scanTree("./");
 * ```
 */
export interface TreeScan {
  /** The absolute root. */
  readonly root: string;
  /** Files to sync, sorted by path (code-unit order, the same on every machine). */
  readonly files: readonly ScannedFile[];
  /** Sum of `files[].size`. */
  readonly totalBytes: number;
  /** Skipped symlinks, special files and unreadable entries, for people. */
  readonly warnings: readonly string[];
  /** True when the walk stopped early because `stopAfterFiles` was exceeded. */
  readonly truncated: boolean;
}

/**
 * Options of {@link scanTree}: the ignore rules plus walk limits.
 *
 * @defaultValue `{}`: default excludes, 32 operations in flight, no file limit
 * @example
 * ```ts
 * const options: ScanTreeOptions = { ignore: ["data/"], extraExcludes: ["/checkpoints/"], concurrency: 16 };
 * ```
 */
export interface ScanTreeOptions extends IgnoreRulesOptions {
  /** Filesystem operations in flight. @defaultValue {@link DEFAULT_FS_CONCURRENCY} */
  readonly concurrency?: number | undefined;
  /** Stop walking once more than this many files were found (the size guard will refuse anyway). @defaultValue Infinity */
  readonly stopAfterFiles?: number | undefined;
  /** Cancels the walk with ABORTED. */
  readonly signal?: AbortSignal | undefined;
}

/**
 * Walks a source tree and lists the regular files to sync, honouring {@link IgnoreRules} (defaults,
 * every `.gitignore`, every `.runctlignore`, the call's list). Nothing is hashed here, so a size guard
 * can refuse a huge tree before any file is read.
 *
 * Decisions: symlinks (to files or folders) are neither followed nor copied; each one not excluded is
 * reported in `warnings` (a link into a dataset would otherwise upload it, and a link on the machine
 * could point outside the sync folder). Sockets, FIFOs and devices are skipped with a warning too.
 * Unreadable folders are skipped with a warning. Empty folders are not synced (as in git). The root
 * itself may be a symlink to a folder.
 *
 * @defaultValue options = `{}`
 * @example
 * ```ts
 * const scan = await scanTree("./", { ignore: ["data/"] });
 * console.log(scan.files.length, scan.totalBytes, scan.warnings);
 * ```
 */
export async function scanTree(root: string, options: ScanTreeOptions = {}): Promise<TreeScan> {
  const absRoot = resolve(root);
  await assertDirectory(absRoot);
  const limit = createLimiter(options.concurrency ?? DEFAULT_FS_CONCURRENCY);
  const stopAfter = options.stopAfterFiles ?? Number.POSITIVE_INFINITY;
  const files: ScannedFile[] = [];
  const warnings: string[] = [];
  let truncated = false;
  const signal = options.signal;
  let sliceStart = performance.now();

  const walk = async (absDir: string, relDir: string, parentRules: IgnoreRules): Promise<void> => {
    if (truncated) return;
    throwIfAborted(signal);
    let dirents: Dirent[];
    try {
      dirents = await limit(() => readdir(absDir, { withFileTypes: true }));
    } catch (cause) {
      if (relDir === "") throw cause;
      warnings.push(`Skipped unreadable folder ${relDir}/: ${(cause as Error).message}`);
      return;
    }
    const rules = await loadIgnoreFiles(absDir, relDir, dirents, parentRules, limit, warnings);
    const subdirs: Promise<void>[] = [];
    for (const d of dirents) {
      if (truncated) break;
      const rel = relDir === "" ? d.name : `${relDir}/${d.name}`;
      if (d.isDirectory()) {
        if (!rules.ignores(rel, true)) subdirs.push(walk(join(absDir, d.name), rel, rules));
      } else if (d.isFile()) {
        if (!rules.ignores(rel, false)) {
          // A synchronous lstat: through the thread pool, the round trip costs more than the call.
          statFile(join(absDir, d.name), rel, files, warnings);
          if (files.length > stopAfter) truncated = true;
          if (performance.now() - sliceStart > SYNC_SLICE_MS) {
            await yieldToEventLoop();
            sliceStart = performance.now();
            throwIfAborted(signal);
          }
        }
      } else if (!rules.ignores(rel, false)) {
        warnings.push(
          d.isSymbolicLink()
            ? `Skipped symlink ${rel}: runctl does not follow or copy symlinks (copy the target into the tree, or exclude the link).`
            : `Skipped ${rel}: not a regular file or folder.`,
        );
      }
    }
    await Promise.all(subdirs);
  };

  await walk(absRoot, "", IgnoreRules.create(options));
  throwIfAborted(signal);
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  let totalBytes = 0;
  for (const f of files) totalBytes += f.size;
  return { root: absRoot, files, totalBytes, warnings: summarise(warnings.sort()), truncated };
}

async function assertDirectory(absRoot: string): Promise<void> {
  let isDir = false;
  try {
    isDir = (await stat(absRoot)).isDirectory();
  } catch (cause) {
    throw new RunctlError("SYNC_DIR_NOT_FOUND", `The folder to sync does not exist: ${absRoot}. Pass the project folder (it is synced as is, so make it explicit).`, {
      cause,
      details: { path: absRoot },
    });
  }
  if (!isDir) {
    throw new RunctlError("SYNC_DIR_NOT_FOUND", `The path to sync is not a folder: ${absRoot}. Pass the project folder that holds the script.`, {
      details: { path: absRoot },
    });
  }
}

async function loadIgnoreFiles(
  absDir: string,
  relDir: string,
  dirents: readonly Dirent[],
  rules: IgnoreRules,
  limit: <T>(task: () => Promise<T>) => Promise<T>,
  warnings: string[],
): Promise<IgnoreRules> {
  const present = (name: string): boolean => dirents.some((d) => d.name === name && d.isFile());
  // Like git >= 2.32, a symlinked ignore file is not read (it could point anywhere).
  const read = async (name: string): Promise<string | undefined> => {
    if (!present(name)) return undefined;
    try {
      return await limit(() => readFile(join(absDir, name), "utf8"));
    } catch (cause) {
      warnings.push(`Could not read ${relDir === "" ? name : `${relDir}/${name}`}: ${(cause as Error).message}`);
      return undefined;
    }
  };
  const [gitignore, runctlignore] = await Promise.all([read(IGNORE_FILE_NAMES.git), read(IGNORE_FILE_NAMES.runctl)]);
  return rules.withIgnoreFiles(relDir, { gitignore, runctlignore });
}

function statFile(absPath: string, rel: string, files: ScannedFile[], warnings: string[]): void {
  try {
    const st = lstatSync(absPath);
    // Replaced between readdir and lstat: only regular files are synced.
    if (!st.isFile()) {
      warnings.push(`Skipped ${rel}: it stopped being a regular file during the scan.`);
      return;
    }
    files.push({ path: rel, size: st.size, mode: st.mode & 0o777, mtimeMs: st.mtimeMs, ino: st.ino });
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === "ENOENT") {
      // Node decodes names as UTF-8, so a name that is not valid UTF-8 cannot be opened again.
      if (rel.includes("\uFFFD")) warnings.push(`Skipped ${rel}: its name is not valid UTF-8.`);
      // Otherwise it was deleted while walking: it is simply not part of this snapshot.
      return;
    }
    warnings.push(`Skipped ${rel}: ${(cause as Error).message}`);
  }
}

function summarise(warnings: string[]): string[] {
  if (warnings.length <= MAX_WARNINGS) return warnings;
  return [...warnings.slice(0, MAX_WARNINGS), `... and ${warnings.length - MAX_WARNINGS} more skipped entries.`];
}
