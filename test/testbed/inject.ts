/**
 * Typed access, from a test file, to the testbed that global-setup.ts started.
 *
 * @example
 * ```ts
 * import { leaseTestHosts } from "../testbed/inject.js";
 * const lease = await leaseTestHosts(1);
 * const host = lease.hosts[0]!;   // address, user, privateKeyPath, knownHostsPath, kill(), partition()...
 * ```
 */
import { inject } from "vitest";
import "./global-setup.js";
import { leaseHosts, type HostLease } from "./host-lease.js";
import { attachTestbed, type Testbed, type TestbedInfo } from "./testbed.js";

export type { HostLease } from "./host-lease.js";
export type { TestbedInfo, TestHostInfo, TestHost, Testbed } from "./testbed.js";

/** The testbed's JSON description. */
export function testbedInfo(): TestbedInfo {
  const info = inject("runctlTestbed");
  if (!info) throw new Error("No SSH testbed: vitest.config.ts must list test/testbed/global-setup.ts in globalSetup.");
  return info;
}

let attached: Testbed | undefined;

/** The testbed, with fault controls usable from this worker (it cannot be stopped from here). */
export function useTestbed(): Testbed {
  attached ??= attachTestbed(testbedInfo());
  return attached;
}

/**
 * Leases `count` hosts for exclusive use by this test file (see host-lease.ts); release them in afterAll.
 * Hosts come healthy: no faults, running.
 */
export function leaseTestHosts(count: number, options: { readonly timeoutMs?: number } = {}): Promise<HostLease> {
  return leaseHosts(useTestbed(), count, options);
}
