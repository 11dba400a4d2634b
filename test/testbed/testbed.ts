/**
 * The local SSH testbed: N "machines", each a network namespace behind one bridge, running its own
 * OpenSSH server as PID 1 of its own UTS/mount/PID namespaces (own hostname, private /tmp, /run,
 * /var/log and /dev/shm, own process table), with a dedicated user, ed25519 keys and key-only auth.
 *
 * Safety: before anything connects, a blackhole guard route is installed for the testbed subnet and
 * every host address must route straight out of the testbed bridge (see net-guard.ts). The testbed
 * connects only to addresses it has just created.
 *
 * Several testbeds may run at once on one machine (parallel test runs): each takes a free "slot"
 * (a lock under /run/runctl-testbed), and the slot number picks the subnet and every name.
 */
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { chmod, chown, mkdir, readFile, writeFile } from "node:fs/promises";
import { connect as netConnect } from "node:net";
import { join, resolve } from "node:path";
import { assertRoutesViaBridge, assertSubnetFree, GUARD_METRIC, installGuardRoute } from "./net-guard.js";
import { processAlive, processStartTime, sh, sleep } from "./sys.js";

/** Options of {@link startTestbed}. */
export interface TestbedOptions {
  /** Number of hosts (1..200). */
  readonly hosts: number;
  /** Folder for keys, configs, homes and logs. Must be outside /tmp (the hosts' /tmp is private). */
  readonly stateDir: string;
  /**
   * First two octets of the private /16 the testbed uses; slot N takes `<base>.N.0/24`.
   * @defaultValue `process.env.RUNCTL_TESTBED_SUBNET_BASE ?? "10.77"`
   */
  readonly subnetBase?: string;
  /** Use exactly this slot (0..slots-1) instead of the first free one. */
  readonly slot?: number;
  /** Number of slots (parallel testbeds). @defaultValue 8 */
  readonly slots?: number;
  /** How long to wait for a free slot. @defaultValue 300000 */
  readonly slotWaitMs?: number;
  /** Progress messages. @defaultValue none */
  readonly log?: (message: string) => void;
}

/** Everything about one test host, JSON-serialisable (it crosses from vitest's global setup to tests). */
export interface TestHostInfo {
  readonly index: number;
  /** Name of the host: also its network namespace, its hostname and its user's name. */
  readonly name: string;
  readonly hostname: string;
  readonly netns: string;
  /** The host-side end of its veth pair (on the bridge). */
  readonly vethHost: string;
  readonly address: string;
  readonly port: 22;
  readonly user: string;
  readonly home: string;
  /** Client private key (OpenSSH format, no passphrase) that the user's authorized_keys accepts. */
  readonly privateKeyPath: string;
  readonly publicKeyPath: string;
  /** known_hosts file holding every host of the testbed (`ADDR ssh-ed25519 KEY`). */
  readonly knownHostsPath: string;
  /** The host's public host key, `ssh-ed25519 BASE64`. */
  readonly hostKey: string;
  readonly hostKeyPath: string;
  readonly sshdConfigPath: string;
  readonly sshdLogPath: string;
  readonly consoleLogPath: string;
}

/** Everything about a testbed, JSON-serialisable. */
export interface TestbedInfo {
  readonly slot: number;
  /** The testbed subnet, e.g. `10.77.0.0/24`. */
  readonly subnet: string;
  /** The bridge's own address (this machine, as seen from the hosts). */
  readonly gateway: string;
  readonly bridge: string;
  /** This testbed's state folder (a slot folder inside the `stateDir` option). */
  readonly stateDir: string;
  readonly knownHostsPath: string;
  /** An address inside the subnet, routed via the bridge, where nobody listens. */
  readonly unusedAddress: string;
  /** The guard route, as `ip route` prints it. */
  readonly guardRoute: string;
  readonly ownerPid: number;
  readonly hosts: readonly TestHostInfo[];
}

const SLOT_LOCK_DIR = "/run/runctl-testbed";

/** The `NSpid` line of /proc/PID/status: the pid in each pid namespace, this machine's first. */
function nspidOf(pid: number | "self"): string[] {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/) ?? [];
}

/** How deep the test runner's own pid namespace is (1: the machine's; more inside a container). */
const SELF_PID_NS_DEPTH = nspidOf("self").length;

/**
 * Whether a process with this `NSpid` is a test host's PID 1: pid 1 in a pid namespace exactly one
 * level below the runner's. A container that dockerd on the host starts (`--network host`, so in
 * the host's network namespace too) has a PID 1 of its own one level further down; once the
 * machine's pids wrap around it may have a lower pid than the host's sshd, and taking it for the
 * host's init killed the container instead of the host.
 */
export function isHostInit(nspid: readonly string[], selfDepth: number): boolean {
  return nspid.length === selfDepth + 1 && nspid[nspid.length - 1] === "1";
}

/** The /etc/hosts every test host sees (bind-mounted by its startup script): see {@link hostsFile}. */
export function hostsFilePath(stateDir: string): string {
  return join(stateDir, "hosts");
}

/**
 * The hosts file of a testbed: localhost, then every test host's name and address, so each host
 * resolves the others (torch's gloo and c10d look peers and themselves up by name; without this a
 * host's own name falls back to loopback and its peers cannot connect).
 */
export function hostsFile(hosts: readonly { readonly address: string; readonly hostname: string }[]): string {
  const lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", ...hosts.map((h) => `${h.address}\t${h.hostname}`)];
  return `# runctl testbed: every test host\n${lines.join("\n")}\n`;
}

const PACKAGES = ["openssh-server", "openssh-client", "rsync", "nftables", "iproute2"] as const;
const UNUSED_HOST_OCTET = 250;

/** Names derived from a slot. */
function names(slot: number, subnetBase: string) {
  const prefix = `rtb${slot}`;
  return {
    prefix,
    bridge: `${prefix}br`,
    subnet: `${subnetBase}.${slot}.0/24`,
    gateway: `${subnetBase}.${slot}.1`,
    hostName: (i: number) => `${prefix}h${i}`,
    hostAddress: (i: number) => `${subnetBase}.${slot}.${10 + i}`,
    vethHost: (i: number) => `${prefix}h${i}v`,
    unusedAddress: `${subnetBase}.${slot}.${UNUSED_HOST_OCTET}`,
  };
}

function checkSubnetBase(base: string): void {
  const m = /^(\d{1,3})\.(\d{1,3})$/.exec(base);
  const a = Number(m?.[1]);
  const b = Number(m?.[2]);
  const ok = m !== null && b <= 255 && (a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168));
  if (!ok) throw new Error(`SAFETY: testbed subnet base "${base}" must be the first two octets of a private /16 (10.x, 172.16-31.x, 192.168).`);
}

/**
 * A test host with its fault controls. Built from {@link TestHostInfo}, so any process (a test worker)
 * can drive a host created by another (vitest's global setup): every control reads the system's state
 * rather than remembering pids.
 */
export class TestHost implements TestHostInfo {
  readonly index: number;
  readonly name: string;
  readonly hostname: string;
  readonly netns: string;
  readonly vethHost: string;
  readonly address: string;
  readonly port = 22 as const;
  readonly user: string;
  readonly home: string;
  readonly privateKeyPath: string;
  readonly publicKeyPath: string;
  readonly knownHostsPath: string;
  readonly hostKey: string;
  readonly hostKeyPath: string;
  readonly sshdConfigPath: string;
  readonly sshdLogPath: string;
  readonly consoleLogPath: string;
  /** The testbed this host belongs to. */
  readonly bed: TestbedInfo;

  constructor(info: TestHostInfo, bed: TestbedInfo) {
    this.index = info.index;
    this.name = info.name;
    this.hostname = info.hostname;
    this.netns = info.netns;
    this.vethHost = info.vethHost;
    this.address = info.address;
    this.user = info.user;
    this.home = info.home;
    this.privateKeyPath = info.privateKeyPath;
    this.publicKeyPath = info.publicKeyPath;
    this.knownHostsPath = info.knownHostsPath;
    this.hostKey = info.hostKey;
    this.hostKeyPath = info.hostKeyPath;
    this.sshdConfigPath = info.sshdConfigPath;
    this.sshdLogPath = info.sshdLogPath;
    this.consoleLogPath = info.consoleLogPath;
    this.bed = bed;
  }

  /** The JSON form. */
  toJSON(): TestHostInfo {
    const { bed: _bed, ...info } = this;
    return info;
  }

  /** Pids (in this machine's pid namespace) of every process inside the host. */
  async pids(): Promise<number[]> {
    const r = await sh("ip", ["netns", "pids", this.netns], { allowFail: true });
    return r.stdout
      .split("\n")
      .map((s) => Number(s.trim()))
      .filter((n) => Number.isInteger(n) && n > 0);
  }

  /** Pid (in this machine's pid namespace) of the host's sshd, its PID 1; undefined when the host is down. */
  async initPid(): Promise<number | undefined> {
    for (const pid of await this.pids()) {
      try {
        if (isHostInit(nspidOf(pid), SELF_PID_NS_DEPTH) && processAlive(pid)) return pid;
      } catch {
        // gone meanwhile
      }
    }
    return undefined;
  }

  /** Whether the host's sshd (PID 1) is running. */
  async isAlive(): Promise<boolean> {
    return (await this.initPid()) !== undefined;
  }

  /** Crashes the machine: SIGKILL to its PID 1, which takes every process of the host with it. */
  async kill(): Promise<void> {
    await this.thaw();
    const pid = await this.initPid();
    if (pid !== undefined) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    // Usually milliseconds; a host running dockerd and containers (loop volumes to let go of) takes
    // longer on a loaded machine: 15 s was seen to be too short in a full suite run.
    await this.waitNoProcesses(45_000);
  }

  /** Boots the machine again: same address, user and keys, a fresh process table and empty /tmp. */
  async restart(): Promise<void> {
    if (await this.isAlive()) await this.kill();
    await this.start();
  }

  /** Starts the host's sshd (the host must be down). Waits until it answers with an SSH banner. */
  async start(): Promise<void> {
    await assertRoutesViaBridge(this.address, this.bed.bridge, this.bed.subnet);
    const script = [
      `hostname ${this.hostname}`,
      // In the host's own mount namespace only: the machine's /etc/hosts stays as it is.
      `mount --bind ${hostsFilePath(this.bed.stateDir)} /etc/hosts`,
      "mount -t tmpfs -o size=1g,mode=1777 tmpfs /tmp",
      "mount -t tmpfs -o size=256m,mode=1777 tmpfs /dev/shm",
      "mount -t tmpfs -o size=16m,mode=0755 tmpfs /run",
      "mkdir -p -m 0755 /run/sshd",
      "mount -t tmpfs -o size=16m,mode=0755 tmpfs /var/log",
      `exec /usr/sbin/sshd -D -f ${this.sshdConfigPath} -E ${this.sshdLogPath} -o PidFile=none`,
    ].join(" && ");
    const out = openSync(this.consoleLogPath, "a");
    try {
      const child = spawn(
        "ip",
        ["netns", "exec", this.netns, "unshare", "--uts", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private", "sh", "-c", script],
        { detached: true, stdio: ["ignore", out, out] },
      );
      child.on("error", () => {});
      child.unref();
    } finally {
      closeSync(out);
    }
    await this.waitReady(15_000);
  }

  /** Waits until the host's sshd sends its banner. */
  async waitReady(timeoutMs = 15_000): Promise<void> {
    await assertRoutesViaBridge(this.address, this.bed.bridge, this.bed.subnet);
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await readBanner(this.address, this.port, 1_000)) return;
      await sleep(20);
    }
    const log = existsSync(this.sshdLogPath) ? readFileSync(this.sshdLogPath, "utf8").slice(-2000) : "";
    const con = existsSync(this.consoleLogPath) ? readFileSync(this.consoleLogPath, "utf8").slice(-2000) : "";
    throw new Error(`Test host ${this.name} (${this.address}) did not start sshd within ${timeoutMs} ms.\n${log}\n${con}`);
  }

  private async waitNoProcesses(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if ((await this.pids()).every((p) => !processAlive(p))) return;
      await sleep(10);
    }
    const left = (await this.pids()).filter((p) => processAlive(p)).map((p) => {
      try {
        const stat = readFileSync(`/proc/${p}/stat`, "utf8");
        return `${p} ${stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3)} ${readFileSync(`/proc/${p}/cmdline`, "utf8").replace(/\0/g, " ").slice(0, 120)}`;
      } catch {
        return String(p);
      }
    });
    throw new Error(`Test host ${this.name}: processes still alive ${timeoutMs} ms after the kill: ${left.join("; ")}`);
  }

  /** Cuts the host off the network: every packet in and out of its eth0 is dropped (connections time out). */
  async partition(): Promise<void> {
    await this.nft(
      "rctl_partition",
      `table inet rctl_partition {
  chain input { type filter hook input priority -10; policy drop; iifname "lo" accept; }
  chain output { type filter hook output priority -10; policy drop; oifname "lo" accept; }
}`,
    );
  }

  /** Undoes {@link partition}. */
  async heal(): Promise<void> {
    await this.nft("rctl_partition", undefined);
  }

  /** Stops every process of the host (SIGSTOP): the machine hangs, its TCP stack still answers. */
  async freeze(): Promise<void> {
    for (const pid of await this.pids()) signalPid(pid, "SIGSTOP");
  }

  /** Undoes {@link freeze} (SIGCONT). */
  async thaw(): Promise<void> {
    for (const pid of await this.pids()) signalPid(pid, "SIGCONT");
  }

  /** Drops `percent` % of packets at random, in and out of the host (0 removes the fault). */
  async setLoss(percent: number): Promise<void> {
    if (!(percent >= 0 && percent <= 100)) throw new RangeError(`loss must be within 0..100, got ${percent}`);
    const n = Math.round(percent);
    await this.nft(
      "rctl_loss",
      n === 0
        ? undefined
        : `table inet rctl_loss {
  chain input { type filter hook input priority -5; policy accept; iifname "eth0" numgen random mod 100 < ${n} drop; }
  chain output { type filter hook output priority -5; policy accept; oifname "eth0" numgen random mod 100 < ${n} drop; }
}`,
    );
  }

  /** Limits the host's link to `mbit` Mbit/s in each direction (tbf on both veth ends); null removes it. */
  async setBandwidth(mbit: number | null): Promise<void> {
    if (mbit === null || mbit === 0) {
      await sh("tc", ["qdisc", "del", "dev", this.vethHost, "root"], { allowFail: true });
      await sh("ip", ["netns", "exec", this.netns, "tc", "qdisc", "del", "dev", "eth0", "root"], { allowFail: true });
      return;
    }
    if (!(mbit > 0)) throw new RangeError(`bandwidth must be positive, got ${mbit}`);
    const bytesPerSec = (mbit * 1_000_000) / 8;
    const burst = Math.max(16_384, Math.round(bytesPerSec / 50));
    const args = ["root", "tbf", "rate", `${Math.round(mbit * 1000)}kbit`, "burst", String(burst), "latency", "200ms"];
    await sh("tc", ["qdisc", "replace", "dev", this.vethHost, ...args]);
    await sh("ip", ["netns", "exec", this.netns, "tc", "qdisc", "replace", "dev", "eth0", ...args]);
  }

  /** Removes every fault: heal, no loss, no bandwidth limit, thawed. Does not restart a killed host. */
  async clearFaults(): Promise<void> {
    await this.thaw();
    await this.heal();
    await this.setLoss(0);
    await this.setBandwidth(null);
  }

  /** Makes the host healthy: faults cleared, and running (restarted when it was killed). */
  async ensureHealthy(): Promise<void> {
    await this.clearFaults();
    if (!(await this.isAlive())) await this.start();
  }

  private async nft(table: string, body: string | undefined): Promise<void> {
    // "table X" then "delete table X" makes the delete idempotent; the whole file is one transaction.
    const script = `table inet ${table}\ndelete table inet ${table}\n${body ?? ""}\n`;
    await sh("ip", ["netns", "exec", this.netns, "nft", "-f", "-"], { input: script });
  }
}

function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // gone meanwhile
  }
}

/** Reads an SSH banner from ADDR:PORT; false on refusal, silence or timeout. Callers check the address first. */
function readBanner(address: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const socket = netConnect({ host: address, port });
    let done = false;
    const finish = (ok: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolvePromise(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on("data", (d: Buffer) => finish(d.toString("latin1").startsWith("SSH-")));
    socket.on("error", () => finish(false));
    socket.on("close", () => finish(false));
  });
}

/**
 * A running testbed (or one attached from its {@link TestbedInfo} in another process).
 *
 * @example
 * ```ts
 * const bed = await startTestbed({ hosts: 2, stateDir: "/work/main/.runctl-testbed" });
 * try { console.log(bed.hosts[0]!.address); } finally { await bed.stop(); }
 * ```
 */
export class Testbed {
  readonly info: TestbedInfo;
  readonly hosts: readonly TestHost[];
  private readonly owned: boolean;
  private stopped = false;

  constructor(info: TestbedInfo, owned: boolean) {
    this.info = info;
    this.hosts = info.hosts.map((h) => new TestHost(h, info));
    this.owned = owned;
  }

  /** An address in the testbed subnet, routed via the bridge, where nobody listens. */
  get unusedAddress(): string {
    return this.info.unusedAddress;
  }

  /** Throws unless `address` is a testbed address that routes via the bridge (call before connecting). */
  async assertSafe(address: string): Promise<void> {
    await assertRoutesViaBridge(address, this.info.bridge, this.info.subnet);
  }

  /** The JSON form, for vitest's `provide`. */
  toJSON(): TestbedInfo {
    return this.info;
  }

  /** Tears everything down: processes, namespaces, bridge, users, state folder, slot lock. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    if (!this.owned) throw new Error("This testbed was attached from another process; only its owner stops it.");
    this.stopped = true;
    await cleanupSlot(this.info.slot, this.info.subnet.split(".").slice(0, 2).join("."), this.info.stateDir);
    releaseSlot(this.info.slot);
  }
}

/** Rebuilds a {@link Testbed} from its JSON form in another process (it cannot be stopped from there). */
export function attachTestbed(info: TestbedInfo): Testbed {
  return new Testbed(info, false);
}

// ---------------------------------------------------------------------------------------------------
// Slots

interface SlotLock {
  readonly pid: number;
  readonly startTime: string;
  readonly stateDir: string;
}

function slotLockPath(slot: number): string {
  return join(SLOT_LOCK_DIR, `slot-${slot}.json`);
}

/** Takes slot `slot` if free or stale; returns whether it was taken. */
function tryTakeSlot(slot: number, stateDir: string): boolean {
  mkdirSync(SLOT_LOCK_DIR, { recursive: true });
  const path = slotLockPath(slot);
  const mine: SlotLock = { pid: process.pid, startTime: processStartTime(process.pid) ?? "", stateDir };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, "wx");
      writeFileSync(fd, JSON.stringify(mine));
      closeSync(fd);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    let holder: SlotLock | undefined;
    try {
      holder = JSON.parse(readFileSync(path, "utf8")) as SlotLock;
    } catch {
      holder = undefined; // being written right now, or garbage
    }
    if (holder && processAlive(holder.pid, holder.startTime || undefined)) return false;
    if (!holder) {
      // Unreadable: stale only if it stays unreadable (a writer finishes within milliseconds).
      try {
        const text = readFileSync(path, "utf8");
        if (text.trim() !== "") return false;
      } catch {
        continue;
      }
    }
    // Stale: move it aside atomically (only one contender wins the rename), then retry.
    try {
      renameSync(path, `${path}.stale-${process.pid}`);
      unlinkSync(`${path}.stale-${process.pid}`);
    } catch {
      // someone else took it over
    }
  }
  return false;
}

function releaseSlot(slot: number): void {
  const path = slotLockPath(slot);
  try {
    const holder = JSON.parse(readFileSync(path, "utf8")) as SlotLock;
    if (holder.pid === process.pid) unlinkSync(path);
  } catch {
    // nothing to release
  }
}

// ---------------------------------------------------------------------------------------------------
// Setup and teardown

/** Installs the apt packages the testbed needs when one is missing. */
export async function ensurePackages(log: (m: string) => void = () => {}): Promise<void> {
  const missing: string[] = [];
  for (const p of PACKAGES) {
    const r = await sh("dpkg-query", ["-W", "-f", "${db:Status-Status}", p], { allowFail: true });
    if (r.stdout.trim() !== "installed") missing.push(p);
  }
  if (missing.length === 0) return;
  log(`installing ${missing.join(" ")}`);
  // Keep the package scripts from starting a system-wide sshd on port 22.
  const policy = "/usr/sbin/policy-rc.d";
  const addedPolicy = !existsSync(policy);
  if (addedPolicy) writeFileSync(policy, "#!/bin/sh\nexit 101\n", { mode: 0o755 });
  try {
    const env = ["env", "DEBIAN_FRONTEND=noninteractive"];
    const install = ["apt-get", "install", "-y", "--no-install-recommends", ...missing];
    const first = await sh(env[0]!, [...env.slice(1), ...install], { allowFail: true, timeoutMs: 600_000 });
    if (first.code !== 0) {
      await sh(env[0]!, [...env.slice(1), "apt-get", "update"], { timeoutMs: 600_000 });
      await sh(env[0]!, [...env.slice(1), ...install], { timeoutMs: 600_000 });
    }
  } finally {
    if (addedPolicy) rmSync(policy, { force: true });
  }
}

/**
 * Removes everything a testbed in `slot` may have left behind (a crashed run included): processes in
 * its namespaces, the namespaces, veths, bridge and users. Removes `stateDir` when given.
 */
export async function cleanupSlot(slot: number, subnetBase: string, stateDir?: string): Promise<void> {
  const n = names(slot, subnetBase);
  const hostRe = new RegExp(`^${n.prefix}h\\d+$`);
  const nsList = (await sh("ip", ["netns", "list"], { allowFail: true })).stdout
    .split("\n")
    .map((l) => l.trim().split(/\s+/)[0] ?? "")
    .filter((name) => hostRe.test(name));
  await Promise.all(
    nsList.map(async (ns) => {
      for (let round = 0; round < 50; round++) {
        const pids = (await sh("ip", ["netns", "pids", ns], { allowFail: true })).stdout
          .split("\n")
          .map((s) => Number(s.trim()))
          .filter((p) => Number.isInteger(p) && p > 0 && processAlive(p));
        if (pids.length === 0) break;
        for (const pid of pids) {
          signalPid(pid, "SIGKILL");
          signalPid(pid, "SIGCONT");
        }
        await sleep(20);
      }
      await sh("ip", ["netns", "del", ns], { allowFail: true });
    }),
  );
  const links = JSON.parse((await sh("ip", ["-j", "link", "show"])).stdout || "[]") as { ifname: string }[];
  const linkRe = new RegExp(`^${n.prefix}(br|h\\d+v)$`);
  for (const l of links) if (linkRe.test(l.ifname)) await sh("ip", ["link", "del", l.ifname], { allowFail: true });
  const passwd = readFileSync("/etc/passwd", "utf8");
  for (const line of passwd.split("\n")) {
    const user = line.split(":")[0] ?? "";
    if (hostRe.test(user)) await retry(() => sh("userdel", [user]).then(() => undefined), `userdel ${user}`);
  }
  if (stateDir !== undefined) rmSync(stateDir, { recursive: true, force: true });
}

/**
 * Cleans up other slots that hold leftovers of a crashed run (their lock is gone or its owner is dead).
 * Each is locked while it is cleaned, so a live testbed is never touched.
 */
async function sweepStaleSlots(slots: number, subnetBase: string, mine: number, root: string): Promise<void> {
  const leftovers = new Set<number>();
  const collect = (name: string): void => {
    const m = /^rtb(\d+)(br|h\d+v?)$/.exec(name);
    if (m && Number(m[1]) !== mine && Number(m[1]) < slots) leftovers.add(Number(m[1]));
  };
  (await sh("ip", ["netns", "list"], { allowFail: true })).stdout.split("\n").forEach((l) => collect(l.trim().split(/\s+/)[0] ?? ""));
  (JSON.parse((await sh("ip", ["-j", "link", "show"])).stdout || "[]") as { ifname: string }[]).forEach((l) => collect(l.ifname));
  readFileSync("/etc/passwd", "utf8").split("\n").forEach((l) => collect(l.split(":")[0] ?? ""));
  for (const slot of leftovers) {
    if (!tryTakeSlot(slot, join(root, `slot-${slot}`))) continue; // a live testbed
    try {
      await cleanupSlot(slot, subnetBase, join(root, `slot-${slot}`));
    } finally {
      releaseSlot(slot);
    }
  }
}

async function retry(fn: () => Promise<void>, what: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await fn();
      return;
    } catch (e) {
      // useradd/userdel fail while another process holds the /etc/passwd lock.
      if (attempt >= 50) throw new Error(`${what}: ${(e as Error).message}`);
      await sleep(50 + Math.random() * 100);
    }
  }
}

/** Serialises user creation inside this process (passwd locking). */
let userChain: Promise<void> = Promise.resolve();
function createUser(user: string, home: string): Promise<void> {
  const next = userChain.then(() =>
    retry(() => sh("useradd", ["-M", "-d", home, "-s", "/bin/bash", "-c", "runctl testbed", "-p", "*", user]).then(() => undefined), `useradd ${user}`),
  );
  userChain = next.catch(() => {});
  return next;
}

async function keygen(path: string, comment: string): Promise<string> {
  await sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path]);
  const pub = (await readFile(`${path}.pub`, "utf8")).trim().split(/\s+/);
  return `${pub[0]} ${pub[1]}`;
}

function sshdConfig(h: { address: string; user: string; hostKeyPath: string }): string {
  return `# runctl testbed host
Port 22
ListenAddress ${h.address}
HostKey ${h.hostKeyPath}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers ${h.user}
AuthorizedKeysFile .ssh/authorized_keys
Subsystem sftp internal-sftp
MaxSessions 64
MaxStartups 64:30:128
LoginGraceTime 30
ClientAliveInterval 5
ClientAliveCountMax 3
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
LogLevel INFO
`;
}

/**
 * Starts a testbed: installs missing packages, takes a free slot, cleans that slot's leftovers, creates
 * the bridge, guard route and hosts, checks routing, starts every sshd and waits for their banners.
 *
 * @example
 * ```ts
 * const bed = await startTestbed({ hosts: 4, stateDir: resolve(".runctl-testbed") });
 * ```
 */
export async function startTestbed(options: TestbedOptions): Promise<Testbed> {
  const log = options.log ?? (() => {});
  const count = options.hosts;
  if (!Number.isInteger(count) || count < 1 || count > 200) throw new RangeError(`hosts must be 1..200, got ${count}`);
  const subnetBase = options.subnetBase ?? process.env["RUNCTL_TESTBED_SUBNET_BASE"] ?? "10.77";
  checkSubnetBase(subnetBase);
  const root = resolve(options.stateDir);
  if (root === "/tmp" || root.startsWith("/tmp/")) throw new Error("The testbed state folder must be outside /tmp (the hosts' /tmp is private).");
  if (process.getuid?.() !== 0) throw new Error("The SSH testbed needs root (network namespaces, users).");

  await ensurePackages(log);

  const slots = options.slots ?? 8;
  const wanted = options.slot !== undefined ? [options.slot] : Array.from({ length: slots }, (_, i) => i);
  const deadline = Date.now() + (options.slotWaitMs ?? 300_000);
  let slot: number | undefined;
  for (;;) {
    slot = wanted.find((s) => tryTakeSlot(s, join(root, `slot-${s}`)));
    if (slot !== undefined) break;
    if (Date.now() > deadline) throw new Error(`No free testbed slot among ${wanted.join(",")} (see ${SLOT_LOCK_DIR}).`);
    await sleep(500);
  }

  await sweepStaleSlots(slots, subnetBase, slot, root);
  try {
    return await buildTestbed(slot, count, subnetBase, join(root, `slot-${slot}`), log);
  } catch (e) {
    await cleanupSlot(slot, subnetBase).catch(() => {});
    releaseSlot(slot);
    throw e;
  }
}

async function buildTestbed(slot: number, count: number, subnetBase: string, dir: string, log: (m: string) => void): Promise<Testbed> {
  const n = names(slot, subnetBase);
  await cleanupSlot(slot, subnetBase, dir);
  await assertSubnetFree(n.subnet, n.bridge);

  // The guard comes first: from here on a subnet address off the bridge goes nowhere.
  await installGuardRoute(n.subnet);

  mkdirSync(dir, { recursive: true, mode: 0o755 });
  await chmod(dir, 0o755);
  await chmod(resolve(dir, ".."), 0o755);
  await mkdir("/run/sshd", { recursive: true, mode: 0o755 });

  await sh("ip", ["link", "add", n.bridge, "type", "bridge"]);
  await sh("ip", ["addr", "add", `${n.gateway}/24`, "dev", n.bridge]);
  await sh("ip", ["link", "set", n.bridge, "up"]);

  const knownHostsPath = join(dir, "known_hosts");
  const hosts: TestHostInfo[] = await Promise.all(
    Array.from({ length: count }, async (_, i): Promise<TestHostInfo> => {
      const name = n.hostName(i);
      const address = n.hostAddress(i);
      const hdir = join(dir, name);
      const home = join(hdir, "home");
      await mkdir(join(home, ".ssh"), { recursive: true });
      await chmod(hdir, 0o755);
      const hostKeyPath = join(hdir, "ssh_host_ed25519_key");
      const privateKeyPath = join(hdir, "id_ed25519");
      const [hostKey, clientKey] = await Promise.all([keygen(hostKeyPath, `${name}-host`), keygen(privateKeyPath, `${name}-client`)]);
      await createUser(name, home);
      await writeFile(join(home, ".ssh", "authorized_keys"), `${clientKey}\n`, { mode: 0o600 });
      const uid = Number((await sh("id", ["-u", name])).stdout.trim());
      const gid = Number((await sh("id", ["-g", name])).stdout.trim());
      for (const p of [home, join(home, ".ssh"), join(home, ".ssh", "authorized_keys")]) await chown(p, uid, gid);
      await chmod(home, 0o755);
      await chmod(join(home, ".ssh"), 0o700);

      const vethHost = n.vethHost(i);
      await sh("ip", ["netns", "add", name]);
      await sh("ip", ["link", "add", vethHost, "type", "veth", "peer", "name", "eth0", "netns", name]);
      await sh("ip", ["link", "set", vethHost, "master", n.bridge, "up"]);
      await sh("ip", ["-n", name, "addr", "add", `${address}/24`, "dev", "eth0"]);
      await sh("ip", ["-n", name, "link", "set", "eth0", "up"]);
      await sh("ip", ["-n", name, "link", "set", "lo", "up"]);

      const sshdConfigPath = join(hdir, "sshd_config");
      await writeFile(sshdConfigPath, sshdConfig({ address, user: name, hostKeyPath }));
      return {
        index: i,
        name,
        hostname: name,
        netns: name,
        vethHost,
        address,
        port: 22,
        user: name,
        home,
        privateKeyPath,
        publicKeyPath: `${privateKeyPath}.pub`,
        knownHostsPath,
        hostKey,
        hostKeyPath,
        sshdConfigPath,
        sshdLogPath: join(hdir, "sshd.log"),
        consoleLogPath: join(hdir, "console.log"),
      };
    }),
  );
  await writeFile(knownHostsPath, hosts.map((h) => `${h.address} ${h.hostKey}\n`).join(""));
  await writeFile(hostsFilePath(dir), hostsFile(hosts), { mode: 0o644 });

  const info: TestbedInfo = {
    slot,
    subnet: n.subnet,
    gateway: n.gateway,
    bridge: n.bridge,
    stateDir: dir,
    knownHostsPath,
    unusedAddress: n.unusedAddress,
    guardRoute: `blackhole ${n.subnet} metric ${GUARD_METRIC}`,
    ownerPid: process.pid,
    hosts,
  };
  const bed = new Testbed(info, true);

  // Refuse to go on unless every address (and the unused one) routes via the bridge.
  for (const h of hosts) await bed.assertSafe(h.address);
  await bed.assertSafe(info.unusedAddress);

  await Promise.all(bed.hosts.map((h) => h.start()));
  log(`testbed slot ${slot}: ${count} hosts on ${n.subnet} via ${n.bridge}`);
  return bed;
}
