/**
 * A cross-process lock file for test infrastructure shared by parallel vitest workers (and runs): the
 * file holds the holder's pid and start time; a lock whose holder is dead is taken over.
 */
import { tryLockFile, unlockFile } from "../testbed/lock-file.js";
import { sleep } from "../testbed/sys.js";

/**
 * Runs `fn` while holding the lock file `path` (waiting up to `timeoutMs` for it).
 *
 * @example
 * ```ts
 * await withFileLock("/var/cache/runctl-test/x.lock", 900_000, () => build());
 * ```
 */
export async function withFileLock<T>(path: string, timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (!tryLockFile(path)) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for the lock ${path}.`);
    await sleep(250 + Math.random() * 250);
  }
  try {
    return await fn();
  } finally {
    unlockFile(path);
  }
}
