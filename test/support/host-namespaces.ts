/**
 * Root-side access to a test host's namespaces (test/testbed/testbed.ts: each host's sshd is PID 1 of
 * its own net/UTS/mount/PID namespaces). Used to start daemons "on" a test host and to mount things
 * into its private mount namespace. Everything here needs root.
 */
import { readFileSync } from "node:fs";
import { sh, type ShResult } from "../testbed/sys.js";
import type { TestHost } from "../testbed/testbed.js";

/** Where a test daemon or volume lives: this machine's root namespaces, or inside a test host. */
export type MachineTarget = "local" | TestHost;

/** Pid (in this machine's pid namespace) of a test host's sshd, its PID 1; throws when the host is down. */
export async function hostInitPid(host: TestHost): Promise<number> {
  const pid = await host.initPid();
  if (pid === undefined) throw new Error(`Test host ${host.name} is down (no sshd); start it first.`);
  return pid;
}

/**
 * `nsenter` argv prefix that enters the namespaces of `pid`: `"mount"` only, or `"all"` (net, mount,
 * UTS, PID: a process started this way is a process of the test host, and dies when it is killed).
 */
export function nsenterPrefix(pid: number, which: "mount" | "all"): string[] {
  return ["nsenter", "-t", String(pid), ...(which === "all" ? ["-n", "-m", "-u", "-p"] : ["-m"]), "--"];
}

/** Runs a `sh -c` script in the target's mount namespace (arguments are `$1`...); throws on failure. */
export async function shIn(target: MachineTarget, script: string, args: readonly string[] = [], options: { readonly allowFail?: boolean } = {}): Promise<ShResult> {
  const argv = ["sh", "-c", script, "sh", ...args];
  if (target === "local") return sh(argv[0]!, argv.slice(1), options);
  const prefix = nsenterPrefix(await hostInitPid(target), "mount");
  return sh(prefix[0]!, [...prefix.slice(1), ...argv], options);
}

interface MountEntry {
  readonly target: string;
  readonly fstype: string;
  readonly source: string;
  readonly superOptions: string;
}

/** Mounts from /proc/PID/mountinfo (fields per proc(5); octal escapes decoded). */
export function mountTable(pid: number | "self" = "self"): MountEntry[] {
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return readFileSync(`/proc/${pid}/mountinfo`, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const [left, right] = line.split(" - ");
      const f = (left ?? "").split(" ");
      const r = (right ?? "").split(" ");
      return { target: unescape(f[4] ?? ""), fstype: r[0] ?? "", source: unescape(r[1] ?? ""), superOptions: r[2] ?? "" };
    });
}

/**
 * The script that mounts this machine's cgroup layout (tmpfs + v1 controllers, or cgroup2) inside a
 * mount namespace that lacks it. Test hosts need it: their sshd was started by `ip netns exec`, which
 * mounts a fresh /sys without cgroups, and dockerd then fails with "Devices cgroup isn't mounted".
 */
function cgroupMountScript(): string {
  const entries = mountTable().filter((m) => m.target === "/sys/fs/cgroup" || m.target.startsWith("/sys/fs/cgroup/"));
  const lines: string[] = [];
  for (const m of entries) {
    const opts = m.superOptions.split(",").filter((o) => o !== "rw" && o !== "ro" && !o.startsWith("size=") && !o.startsWith("inode64"));
    let mountOpts: string;
    if (m.fstype === "tmpfs") mountOpts = "mode=755";
    else if (m.fstype === "cgroup") {
      // A named hierarchy without controllers (name=systemd) must say "none".
      const controllers = opts.filter((o) => !o.startsWith("name=") && !["clone_children", "noprefix", "xattr"].includes(o) && !o.startsWith("release_agent"));
      mountOpts = [...(controllers.length === 0 ? ["none"] : []), ...opts].join(",");
    } else if (m.fstype === "cgroup2") mountOpts = opts.join(",") || "defaults";
    else continue;
    const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
    lines.push(`mkdir -p ${q(m.target)} && mount -t ${m.fstype} -o ${q(mountOpts)} ${q(m.fstype === "tmpfs" ? "cgroup_root" : m.fstype)} ${q(m.target)}`);
  }
  if (lines.length === 0) {
    // This machine shows no cgroup mounts either: the v1 layout known to work (testbed-facts-2 Q2).
    lines.push(
      "mount -t tmpfs -o mode=755 cgroup_root /sys/fs/cgroup",
      "for c in cpu cpuacct cpuset memory devices freezer blkio pids; do mkdir -p /sys/fs/cgroup/$c && mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c; done",
      "mkdir -p /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd",
    );
  }
  // Idempotent: a host that already has them (an earlier daemon, another tool) is left alone.
  return `set -e\nif [ -e /sys/fs/cgroup/devices/devices.list ] || [ -e /sys/fs/cgroup/cgroup.controllers ]; then exit 0; fi\n${lines.join("\n")}\n`;
}

/**
 * Mounts the cgroup hierarchies inside a test host's mount namespace unless they are there. They stay
 * until the host is restarted (a fresh mount namespace); they are harmless to other test files.
 */
export async function ensureCgroupMounts(host: TestHost): Promise<void> {
  await shIn(host, cgroupMountScript());
}

/**
 * Lazily unmounts every mount at or below `dir` in the mount namespace of `pid` (a crashed daemon's
 * overlay and shm mounts), deepest first, so the folder can be removed.
 */
export async function unmountUnder(dir: string, pid: number | "self" = "self"): Promise<void> {
  let table: MountEntry[];
  try {
    table = mountTable(pid);
  } catch {
    return; // the namespace is gone, and its mounts with it
  }
  const targets = table
    .map((m) => m.target)
    .filter((t) => t === dir || t.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const t of targets) {
    const argv = pid === "self" ? ["umount", "-l", t] : ["nsenter", "-t", String(pid), "-m", "--", "umount", "-l", t];
    await sh(argv[0]!, argv.slice(1), { allowFail: true });
  }
}
