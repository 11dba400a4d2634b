/**
 * A cross-process lock file for test infrastructure shared by parallel vitest workers (and runs): the
 * file holds the holder's pid and start time; a lock whose holder is dead is taken over.
 */
import { closeSync, openSync, readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { processAlive, processStartTime, sleep } from "../testbed/sys.js";

interface LockHolder {
  readonly pid: number;
  readonly startTime: string;
}

function tryLock(path: string): boolean {
  const mine: LockHolder = { pid: process.pid, startTime: processStartTime(process.pid) ?? "" };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, "wx");
      writeFileSync(fd, JSON.stringify(mine));
      closeSync(fd);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    let holder: LockHolder | undefined;
    try {
      holder = JSON.parse(readFileSync(path, "utf8")) as LockHolder;
    } catch {
      return false; // being written right now
    }
    if (processAlive(holder.pid, holder.startTime || undefined)) return false;
    try {
      // Only one contender wins the rename of a stale lock.
      const aside = `${path}.stale-${process.pid}`;
      renameSync(path, aside);
      unlinkSync(aside);
    } catch {
      // someone else took it over
    }
  }
  return false;
}

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
  while (!tryLock(path)) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for the lock ${path}.`);
    await sleep(250 + Math.random() * 250);
  }
  try {
    return await fn();
  } finally {
    try {
      const holder = JSON.parse(readFileSync(path, "utf8")) as LockHolder;
      if (holder.pid === process.pid) unlinkSync(path);
    } catch {
      // already gone
    }
  }
}
