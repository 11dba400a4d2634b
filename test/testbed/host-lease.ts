/**
 * Exclusive use of test hosts across vitest workers. Test files run in parallel processes and fault
 * tests (kill, partition, freeze) must not hit a host another file is using, so a file leases the hosts
 * it needs: a lock file per host in the testbed's state folder, holding the worker's pid. A lock whose
 * holder is dead is taken over. Hosts are made healthy (faults cleared, restarted if killed) when leased
 * and again when released.
 */
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { processAlive, processStartTime, sleep } from "./sys.js";
import type { Testbed, TestHost } from "./testbed.js";

/** Hosts held exclusively until {@link HostLease.release}. */
export interface HostLease extends AsyncDisposable {
  readonly hosts: readonly TestHost[];
  /** Makes the hosts healthy again and frees them. Idempotent. */
  release(): Promise<void>;
}

interface LeaseLock {
  readonly pid: number;
  readonly startTime: string;
}

function lockPath(bed: Testbed, host: TestHost): string {
  return join(bed.info.stateDir, "leases", `${host.name}.json`);
}

function tryLock(path: string): boolean {
  const mine: LeaseLock = { pid: process.pid, startTime: processStartTime(process.pid) ?? "" };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, "wx");
      writeFileSync(fd, JSON.stringify(mine));
      closeSync(fd);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    let holder: LeaseLock | undefined;
    try {
      holder = JSON.parse(readFileSync(path, "utf8")) as LeaseLock;
    } catch {
      return false; // being written
    }
    if (processAlive(holder.pid, holder.startTime || undefined)) return false;
    try {
      const aside = `${path}.stale-${process.pid}`;
      renameSync(path, aside);
      unlinkSync(aside);
    } catch {
      // another contender took it over
    }
  }
  return false;
}

function unlock(path: string): void {
  try {
    const holder = JSON.parse(readFileSync(path, "utf8")) as LeaseLock;
    if (holder.pid === process.pid) unlinkSync(path);
  } catch {
    // already free
  }
}

/**
 * Leases `count` hosts of `bed` for this process, waiting until enough are free (all or nothing, so two
 * files never deadlock holding one host each).
 *
 * @example
 * ```ts
 * const lease = await leaseHosts(bed, 2);
 * try { await lease.hosts[0]!.kill(); } finally { await lease.release(); }
 * ```
 */
export async function leaseHosts(bed: Testbed, count: number, options: { readonly timeoutMs?: number } = {}): Promise<HostLease> {
  if (count < 1 || count > bed.hosts.length) throw new RangeError(`Cannot lease ${count} of ${bed.hosts.length} test hosts.`);
  mkdirSync(join(bed.info.stateDir, "leases"), { recursive: true });
  const deadline = Date.now() + (options.timeoutMs ?? 600_000);
  for (;;) {
    const got: TestHost[] = [];
    for (const host of bed.hosts) {
      if (got.length === count) break;
      if (tryLock(lockPath(bed, host))) got.push(host);
    }
    if (got.length === count) {
      try {
        await Promise.all(got.map((h) => h.ensureHealthy()));
      } catch (e) {
        for (const h of got) unlock(lockPath(bed, h));
        throw e;
      }
      let released = false;
      const release = async (): Promise<void> => {
        if (released) return;
        released = true;
        try {
          await Promise.all(got.map((h) => h.ensureHealthy()));
        } finally {
          for (const h of got) unlock(lockPath(bed, h));
        }
      };
      return { hosts: got, release, [Symbol.asyncDispose]: release };
    }
    for (const h of got) unlock(lockPath(bed, h));
    if (Date.now() > deadline) throw new Error(`Could not lease ${count} test hosts within the timeout (others hold them).`);
    await sleep(100 + Math.random() * 200);
  }
}
