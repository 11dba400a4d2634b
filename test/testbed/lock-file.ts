/**
 * A cross-process lock file: it holds the holder's pid and start time, and a lock whose holder is
 * dead is taken over (only one contender wins the rename of a stale lock).
 */
import { closeSync, openSync, readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { processAlive, processStartTime } from "./sys.js";

interface LockHolder {
  readonly pid: number;
  readonly startTime: string;
}

/**
 * Takes the lock file `path` if it is free or its holder (pid and start time) is dead; false when a
 * live process holds it. Shared by the host leases and the test caches.
 */
export function tryLockFile(path: string): boolean {
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

/** Removes the lock file `path` if this process holds it. */
export function unlockFile(path: string): void {
  try {
    const holder = JSON.parse(readFileSync(path, "utf8")) as LockHolder;
    if (holder.pid === process.pid) unlinkSync(path);
  } catch {
    // already free
  }
}
