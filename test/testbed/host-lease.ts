/**
 * Exclusive use of test hosts across vitest workers. Test files run in parallel processes and fault
 * tests (kill, partition, freeze) must not hit a host another file is using, so a file leases the hosts
 * it needs: a lock file per host in the testbed's state folder, holding the worker's pid. A lock whose
 * holder is dead is taken over. Hosts are made healthy (faults cleared, restarted if killed) when leased
 * and again when released.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { tryLockFile, unlockFile } from "./lock-file.js";
import { sleep } from "./sys.js";
import type { Testbed, TestHost } from "./testbed.js";

/** Hosts held exclusively until {@link HostLease.release}. */
export interface HostLease extends AsyncDisposable {
  readonly hosts: readonly TestHost[];
  /** Makes the hosts healthy again and frees them. Idempotent. */
  release(): Promise<void>;
}

function lockPath(bed: Testbed, host: TestHost): string {
  return join(bed.info.stateDir, "leases", `${host.name}.json`);
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
      if (tryLockFile(lockPath(bed, host))) got.push(host);
    }
    if (got.length === count) {
      try {
        await Promise.all(got.map((h) => h.ensureHealthy()));
      } catch (e) {
        for (const h of got) unlockFile(lockPath(bed, h));
        throw e;
      }
      let released = false;
      const release = async (): Promise<void> => {
        if (released) return;
        released = true;
        try {
          await Promise.all(got.map((h) => h.ensureHealthy()));
        } finally {
          for (const h of got) unlockFile(lockPath(bed, h));
        }
      };
      return { hosts: got, release, [Symbol.asyncDispose]: release };
    }
    for (const h of got) unlockFile(lockPath(bed, h));
    if (Date.now() > deadline) throw new Error(`Could not lease ${count} test hosts within the timeout (others hold them).`);
    await sleep(100 + Math.random() * 200);
  }
}
