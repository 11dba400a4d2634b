/**
 * Network safety for the testbed. Tests may talk only to loopback and to the hosts the testbed creates
 * inside network namespaces behind its own bridge. These checks run before the first connection and
 * before every connection the testbed makes itself; they throw instead of letting a packet leave.
 */
import { sh } from "./sys.js";

/** Metric of the blackhole route that catches the testbed subnet when the bridge is gone. */
export const GUARD_METRIC = 4242;

/** Parses dotted IPv4 to an unsigned 32-bit integer; undefined when not IPv4. */
export function ipv4ToInt(address: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(address);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

/** Parses `A.B.C.D/N` to a network integer and prefix length. */
export function parseCidr(cidr: string): { net: number; bits: number } {
  const [addr, bitsText] = cidr.split("/");
  const ip = addr === undefined ? undefined : ipv4ToInt(addr);
  const bits = Number(bitsText ?? "32");
  if (ip === undefined || !Number.isInteger(bits) || bits < 0 || bits > 32) throw new Error(`Not an IPv4 CIDR: ${cidr}`);
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return { net: (ip & mask) >>> 0, bits };
}

/** Whether `address` lies inside `cidr`. */
export function inCidr(address: string, cidr: string): boolean {
  const ip = ipv4ToInt(address);
  if (ip === undefined) return false;
  const { net, bits } = parseCidr(cidr);
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return ((ip & mask) >>> 0) === net;
}

/** Whether two CIDRs overlap. */
export function cidrsOverlap(a: string, b: string): boolean {
  const pa = parseCidr(a);
  const pb = parseCidr(b);
  const bits = Math.min(pa.bits, pb.bits);
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return ((pa.net & mask) >>> 0) === ((pb.net & mask) >>> 0);
}

interface IpRoute {
  readonly type?: string;
  readonly dst?: string;
  readonly dev?: string;
  readonly gateway?: string;
  readonly metric?: number;
  readonly protocol?: string;
}

function routeCidr(dst: string | undefined): string | undefined {
  if (dst === undefined) return undefined;
  if (dst === "default") return "0.0.0.0/0";
  return dst.includes("/") ? dst : `${dst}/32`;
}

/**
 * Installs the blackhole guard route for the subnet (idempotent). While it exists, an address of the
 * subnet that is not on the bridge goes nowhere instead of following the default route off the machine.
 */
export async function installGuardRoute(subnet: string): Promise<void> {
  await sh("ip", ["route", "replace", "blackhole", subnet, "metric", String(GUARD_METRIC)]);
  await assertGuardRoute(subnet);
}

/** Throws unless the blackhole guard route for `subnet` is installed. */
export async function assertGuardRoute(subnet: string): Promise<void> {
  const routes = JSON.parse((await sh("ip", ["-j", "-4", "route", "show", "type", "blackhole"])).stdout || "[]") as IpRoute[];
  const found = routes.some((r) => routeCidr(r.dst) === subnet && r.metric === GUARD_METRIC);
  if (!found) throw new Error(`SAFETY: the guard route "blackhole ${subnet} metric ${GUARD_METRIC}" is missing; refusing to go on.`);
}

/**
 * Refuses a subnet that something other than the testbed already uses on this machine: any route or
 * address inside it (or equal to it) that is not the testbed's own bridge or guard route.
 */
export async function assertSubnetFree(subnet: string, bridge: string): Promise<void> {
  const routes = JSON.parse((await sh("ip", ["-j", "-4", "route", "show", "table", "all"])).stdout || "[]") as IpRoute[];
  for (const r of routes) {
    const cidr = routeCidr(r.dst);
    if (cidr === undefined || !cidrsOverlap(cidr, subnet)) continue;
    if (parseCidr(cidr).bits < parseCidr(subnet).bits) continue; // a wider route (default, 10/8): ours is more specific
    if (r.type === "blackhole" && r.metric === GUARD_METRIC) continue;
    if (r.dev === bridge) continue; // our own bridge (a leftover being replaced, or its local routes)
    throw new Error(`SAFETY: subnet ${subnet} is already in use on this machine (route ${JSON.stringify(r)}); pick another with RUNCTL_TESTBED_SUBNET_BASE.`);
  }
  const links = JSON.parse((await sh("ip", ["-j", "-4", "addr", "show"])).stdout || "[]") as {
    ifname: string;
    addr_info?: { local: string; prefixlen: number }[];
  }[];
  for (const link of links) {
    if (link.ifname === bridge) continue;
    for (const a of link.addr_info ?? []) {
      if (cidrsOverlap(`${a.local}/${a.prefixlen}`, subnet) && a.prefixlen >= parseCidr(subnet).bits) {
        throw new Error(`SAFETY: ${link.ifname} already holds ${a.local}/${a.prefixlen} inside ${subnet}; refusing to use it.`);
      }
    }
  }
}

/**
 * The check made before connecting to a testbed address: the address lies in the testbed subnet, the guard
 * route exists, and the kernel routes the address straight out of the testbed bridge (no gateway).
 * Throws otherwise.
 */
export async function assertRoutesViaBridge(address: string, bridge: string, subnet: string): Promise<void> {
  if (!inCidr(address, subnet)) throw new Error(`SAFETY: ${address} is outside the testbed subnet ${subnet}; refusing to connect.`);
  await assertGuardRoute(subnet);
  const got = await sh("ip", ["-j", "-4", "route", "get", address], { allowFail: true });
  const routes = got.code === 0 ? (JSON.parse(got.stdout || "[]") as IpRoute[]) : [];
  const r = routes[0];
  if (!r || r.dev !== bridge || r.gateway !== undefined || (r.type !== undefined && r.type !== "unicast")) {
    throw new Error(
      `SAFETY: ${address} does not route via the testbed bridge ${bridge} (ip route get: ${got.stdout.trim() || got.stderr.trim()}); refusing to connect.`,
    );
  }
}

/** Checks that a TCP target is loopback or a testbed address behind one of the testbed's bridges. */
export async function assertSafeTarget(address: string, allowed: { readonly bridge: string; readonly subnet: string } | undefined): Promise<void> {
  if (address === "127.0.0.1" || address === "::1" || address === "localhost") return;
  if (!allowed) throw new Error(`SAFETY: ${address} is neither loopback nor a testbed address; refusing to connect.`);
  await assertRoutesViaBridge(address, allowed.bridge, allowed.subnet);
}
