/**
 * Private Slurm clusters on leased test hosts: a real slurmctld and one slurmd a host (Debian's
 * slurmctld/slurmd/slurm-client 22.05 and munge), for the `slurm()` engine's end-to-end tests.
 *
 * Layout of one cluster (testbed-facts-2.md, Q2): a folder /var/tmp/runctl-slurm/<id> (outside /tmp,
 * which test hosts have private) holds its munge key, state, spool, logs and slurm.conf. One munged
 * runs in this machine's namespaces on a socket path every host reaches (its folder 0755, so the
 * hosts' users can submit). slurmctld runs on hosts[0] and a slurmd on every host, each inside the
 * host's net/mount/UTS/PID namespaces (nsenter into its sshd), so killing a host kills its daemons
 * and jobs like a machine crash. The cluster's `etc` folder is bind-mounted over /etc/slurm in every
 * host's mount namespace: the hosts' users (and product code over SSH) find the cluster at Slurm's
 * default path with no SLURM_CONF. This machine's own /etc/slurm is left alone.
 *
 * Everything outside the hosts' private /tmp, /run, /var/log and /dev/shm is one filesystem shared by
 * every host, like a cluster's NFS: a job of host user U runs as U on every node, in U's home (the
 * submit folder), and its output file is visible everywhere.
 *
 * Behaviour tests can rely on (measured, test/e2e/slurm-testbed.test.ts): a submitted job runs within
 * about a second. `scontrol requeue` TERMs the batch shell and steps, then the job is PENDING with
 * `Reason=BeginTime` and `Restarts` + 1; Slurm holds it back for `cred_expire` (10 s here, 120 s by
 * default) and it runs again about 12 s after the requeue, or about 2 s after it when its owner runs
 * `scontrol update JobId=<id> StartTime=now` in a later second than the requeue (slurmd refuses a
 * launch credential made in the second the requeue revoked the old one, and the job fails). A killed
 * host's node is `*` (not responding) after about 12 s and DOWN after SlurmdTimeout (20 s), when its
 * batch jobs are requeued (then pending on `Reason=Nodes_required_for_job_are_DOWN…` until the
 * node's slurmd is started again).
 */
import { randomBytes } from "node:crypto";
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { sh, sleep, type ShResult } from "../testbed/sys.js";
import type { TestHost } from "../testbed/testbed.js";
import { childOf, killProcessesUsing, processRef, refAlive, signalRef, spawnDetached, stopProcesses, type ProcessRef } from "./daemon-process.js";
import { ensureCgroupMounts, hostInitPid, nsenterPrefix } from "./host-namespaces.js";
import { hardwareWords, parseScontrolRecord, SLURM_PARTITIONS, slurmConf, type SlurmTimings } from "./slurm-conf.js";

/** Folder holding one sub-folder per test cluster. */
export const SLURM_STATE_ROOT = "/var/tmp/runctl-slurm";

/** Where every test host finds its cluster's configuration (a bind mount in the host's namespace). */
export const HOST_SLURM_CONF = "/etc/slurm/slurm.conf";

/** Options of {@link startSlurmCluster}. */
export interface StartSlurmClusterOptions extends SlurmTimings {
  /** How long to wait for every node to be idle. @defaultValue 60000 */
  readonly readyTimeoutMs?: number;
}

/** A running test cluster. Root-side helpers run on the controller host, as root. */
export interface SlurmCluster {
  readonly id: string;
  readonly clusterName: string;
  /** The cluster's folder on this machine. */
  readonly stateDir: string;
  /** slurm.conf on this machine; the same file is {@link HOST_SLURM_CONF} inside every host. */
  readonly confPath: string;
  /** The slurm.conf text. */
  readonly conf: string;
  readonly hosts: readonly TestHost[];
  /** hosts[0]: runs slurmctld (and a slurmd). */
  readonly controller: TestHost;
  /** Node names, one a host, = host names, in host order. */
  readonly nodes: readonly string[];
  /** The default partition (every node). */
  readonly partition: "main";
  /** A second partition (every node), for tests that name one. */
  readonly otherPartition: "debug";
  /** munged's socket (this machine's path; hosts see the same path). */
  readonly mungeSocket: string;
  /** Folder of the daemons' logs (slurmctld.log, slurmd.<node>.log). */
  readonly logDir: string;
  /** Runs a Slurm client (`scontrol`, `squeue`, `sinfo`, `scancel`, `sbatch`…) as root on the controller; non-zero exits are returned. */
  command(program: string, args: readonly string[], options?: { readonly timeoutMs?: number }): Promise<ShResult>;
  /** `scontrol ARGS` as root on the controller; non-zero exits are returned. */
  scontrol(args: readonly string[]): Promise<ShResult>;
  /** `squeue -h ARGS` as root on the controller; non-zero exits are returned. */
  squeue(args: readonly string[]): Promise<ShResult>;
  /** `scontrol -o show job ID`, parsed; undefined once the job is purged (MinJobAge) or unknown. */
  job(id: string): Promise<Record<string, string> | undefined>;
  /** Node name → state word of `sinfo` (`idle`, `alloc`, `down*`, …). */
  nodeStates(): Promise<Record<string, string>>;
  /** Waits until every node (or those named) is idle. */
  waitIdle(nodes?: readonly string[], timeoutMs?: number): Promise<void>;
  /** (Re)starts the slurmd of `host` (after `host.restart()`: its fresh namespace gets cgroups and /etc/slurm again). */
  startNode(host: TestHost): Promise<void>;
  /** Cancels every job, stops the daemons, unmounts /etc/slurm in the hosts, removes the folder. Idempotent; fine after hosts were killed. */
  stop(): Promise<void>;
}

interface OwnerRecord {
  ownerPid: number;
  ownerStart: string;
  daemons: ProcessRef[];
  /** sshd of every host whose /etc/slurm this cluster bind-mounted. */
  hosts: ProcessRef[];
}

const writeRecord = (dir: string, r: OwnerRecord): void => writeFileSync(join(dir, "owner.json"), JSON.stringify(r));

/** Hardware words of `slurmd -C`, once per process (every host sees this machine's CPUs and memory). */
let hardware: string | undefined;
async function nodeHardware(): Promise<string> {
  hardware ??= hardwareWords((await sh("slurmd", ["-C"])).stdout);
  return hardware;
}

/**
 * Starts a private Slurm cluster on leased test hosts and waits until every node is idle (about 5 s).
 * Needs root and the slurmctld, slurmd, slurm-client and munge packages. Call `stop()` in afterAll.
 *
 * @example
 * ```ts
 * const cluster = await startSlurmCluster(lease.hosts);          // 2 leased TestHosts
 * const r = await ssh.exec(["sbatch", "--parsable", "-N2", "job.sh"]); // as the host's user, no SLURM_CONF
 * const job = await cluster.job(r.stdout.trim());                  // { JobState: "RUNNING", … }
 * await cluster.stop();
 * ```
 */
export async function startSlurmCluster(hosts: readonly TestHost[], options: StartSlurmClusterOptions = {}): Promise<SlurmCluster> {
  if (hosts.length === 0) throw new Error("startSlurmCluster needs at least one test host.");
  if (process.getuid?.() !== 0) throw new Error("A Slurm test cluster needs root (namespaces, munged, daemons as root).");
  await sweepStaleClusters();
  const controller = hosts[0]!;
  const hostPids = await Promise.all(hosts.map((h) => hostInitPid(h)));
  const id = randomBytes(4).toString("hex");
  const dir = join(SLURM_STATE_ROOT, id);
  mkdirSync(SLURM_STATE_ROOT, { recursive: true, mode: 0o755 });
  mkdirSync(dir, { mode: 0o755 });
  const record: OwnerRecord = { ownerPid: process.pid, ownerStart: processRef(process.pid).start, daemons: [], hosts: hostPids.map(processRef) };
  writeRecord(dir, record);
  for (const sub of ["etc", "state", "spool", "log", "run", "munge", "munge-run"]) mkdirSync(join(dir, sub), { mode: 0o755 });
  const mungeSocket = join(dir, "munge-run", "munge.socket.2");
  const confPath = join(dir, "etc", "slurm.conf");
  const logDir = join(dir, "log");
  const clusterName = `t${id}`;
  const conf = slurmConf({
    clusterName,
    stateDir: dir,
    mungeSocket,
    nodes: hosts.map((h) => ({ name: h.name, address: h.address })),
    hardware: await nodeHardware(),
    ...options,
  });
  writeFileSync(confPath, conf, { mode: 0o644 });

  /** Runs a program as root inside the controller's network, mount and UTS namespaces. */
  const command = async (program: string, args: readonly string[], o: { readonly timeoutMs?: number } = {}): Promise<ShResult> => {
    const pid = await controller.initPid();
    if (pid === undefined) return { code: 255, stdout: "", stderr: `controller ${controller.name} is down` };
    return sh("nsenter", ["-t", String(pid), "-n", "-m", "-u", "--", program, ...args], { allowFail: true, timeoutMs: o.timeoutMs ?? 30_000 });
  };
  const job = async (jobId: string): Promise<Record<string, string> | undefined> => {
    const r = await command("scontrol", ["-o", "show", "job", jobId]);
    const line = r.stdout.split("\n").find((l) => l.startsWith("JobId="));
    return r.code === 0 && line ? parseScontrolRecord(line) : undefined;
  };
  const nodeStates = async (): Promise<Record<string, string>> => {
    const r = await command("sinfo", ["-h", "-N", "-o", "%N %t"]);
    const out: Record<string, string> = {};
    for (const [n, s] of r.stdout.split("\n").filter(Boolean).map((l) => l.trim().split(/\s+/))) if (n && s) out[n] = s;
    return out;
  };
  const waitIdle = async (nodes: readonly string[] = hosts.map((h) => h.name), timeoutMs = options.readyTimeoutMs ?? 60_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    let states: Record<string, string> = {};
    while (Date.now() < deadline) {
      states = await nodeStates();
      if (nodes.every((n) => states[n] === "idle")) return;
      await sleep(200);
    }
    throw new Error(`Slurm nodes not idle within ${timeoutMs} ms: ${JSON.stringify(states)}\n${logTails(logDir)}`);
  };
  /** Starts a daemon inside `host` (all its namespaces) and records it for the sweep. */
  const startDaemon = async (host: TestHost, argv: readonly string[], name: string): Promise<ProcessRef> => {
    const launcher = spawnDetached([...nsenterPrefix(await hostInitPid(host), "all"), ...argv], join(logDir, `${name}.out`));
    const pid = await childOf(launcher, 10_000);
    if (pid === undefined) throw new Error(`${name} did not start on ${host.name}.\n${logTails(logDir)}`);
    const ref = processRef(pid);
    record.daemons.push(ref);
    writeRecord(dir, record);
    return ref;
  };
  const prepareHost = async (host: TestHost): Promise<void> => {
    await ensureCgroupMounts(host); // slurmd fails without them, even with proctrack/linuxproc
    const pid = await hostInitPid(host);
    await unmountSlurmEtc(pid, dir);
    await sh("nsenter", ["-t", String(pid), "-m", "--", "mount", "--bind", join(dir, "etc"), "/etc/slurm"]);
    const ref = processRef(pid);
    if (!record.hosts.some((h) => h.pid === ref.pid && h.start === ref.start)) record.hosts.push(ref);
    writeRecord(dir, record);
  };
  const startNode = async (host: TestHost): Promise<void> => {
    await prepareHost(host);
    await startDaemon(host, ["slurmd", "-D", "-N", host.name, "-f", HOST_SLURM_CONF], `slurmd.${host.name}`);
  };

  let stopped = false;
  const cluster: SlurmCluster = {
    id,
    clusterName,
    stateDir: dir,
    confPath,
    conf,
    hosts,
    controller,
    nodes: hosts.map((h) => h.name),
    partition: SLURM_PARTITIONS.main,
    otherPartition: SLURM_PARTITIONS.other,
    mungeSocket,
    logDir,
    command,
    scontrol: (args) => command("scontrol", args),
    squeue: (args) => command("squeue", ["-h", ...args]),
    job,
    nodeStates,
    waitIdle,
    startNode,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await cancelAllJobs(command, options.killWaitS ?? 5);
      await teardown(dir, record);
    },
  };

  try {
    await startMunged(dir, mungeSocket, record);
    // /etc/slurm must exist on this machine to be a mount point in the hosts (it does once slurm-client is installed).
    mkdirSync("/etc/slurm", { recursive: true, mode: 0o755 });
    await Promise.all(hosts.map((h) => prepareHost(h)));
    await startDaemon(controller, ["slurmctld", "-D", "-f", HOST_SLURM_CONF], "slurmctld");
    await Promise.all(hosts.map((h) => startDaemon(h, ["slurmd", "-D", "-N", h.name, "-f", HOST_SLURM_CONF], `slurmd.${h.name}`)));
    await waitIdle();
  } catch (e) {
    await cluster.stop();
    throw e;
  }
  return cluster;
}

/** Starts munged as the munge user on a fresh random key; waits until it answers. */
async function startMunged(dir: string, socket: string, record: OwnerRecord): Promise<void> {
  const mungeDir = join(dir, "munge");
  const keyPath = join(mungeDir, "munge.key");
  writeFileSync(keyPath, randomBytes(1024), { mode: 0o400 });
  const uid = Number((await sh("id", ["-u", "munge"])).stdout.trim());
  const gid = Number((await sh("id", ["-g", "munge"])).stdout.trim());
  for (const p of [mungeDir, keyPath, join(dir, "munge-run")]) chownSync(p, uid, gid);
  // munged refuses a key folder others can read; the socket folder stays 0755 for the hosts' users.
  await sh("chmod", ["0700", mungeDir]);
  const argv = ["setpriv", "--reuid=munge", "--regid=munge", "--clear-groups", "munged", "-F", `--socket=${socket}`, `--key-file=${keyPath}`, `--log-file=${join(mungeDir, "munged.log")}`, `--pid-file=${join(dir, "munge-run", "munged.pid")}`, `--seed-file=${join(mungeDir, "munged.seed")}`];
  const pid = spawnDetached(argv, join(dir, "log", "munged.out"));
  const ref = processRef(pid);
  record.daemons.push(ref);
  writeRecord(dir, record);
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (existsSync(socket) && (await sh("munge", ["-n", "-S", socket], { allowFail: true })).code === 0) return;
    if (!refAlive(ref) || Date.now() > deadline) {
      const log = [join(mungeDir, "munged.log"), join(dir, "log", "munged.out")].map((p) => (existsSync(p) ? readFileSync(p, "utf8").slice(-1500) : "")).join("\n");
      throw new Error(`munged did not start (${refAlive(ref) ? "timeout" : "exited"}).\n${log}`);
    }
    await sleep(50);
  }
}

/** Cancels every job and waits (KillWait plus a margin) until none is left; a dead controller is skipped. */
async function cancelAllJobs(command: SlurmCluster["command"], killWaitS: number): Promise<void> {
  const ids = async (): Promise<string[] | undefined> => {
    const r = await command("squeue", ["-h", "-o", "%i"], { timeoutMs: 15_000 });
    return r.code === 0 ? r.stdout.split("\n").map((s) => s.trim()).filter(Boolean) : undefined;
  };
  const first = await ids();
  if (!first || first.length === 0) return;
  await command("scancel", first, { timeoutMs: 15_000 });
  const deadline = Date.now() + (killWaitS + 10) * 1000;
  while (Date.now() < deadline) {
    const left = await ids();
    if (!left || left.length === 0) return;
    await sleep(200);
  }
}

/** Lazily unmounts /etc/slurm in the mount namespace of `pid` when it is this cluster's bind mount. */
async function unmountSlurmEtc(pid: number, dir: string): Promise<void> {
  // A host whose slurmd was started again (startNode) may carry the bind mount more than once:
  // unmount until none of this cluster's is left.
  for (let i = 0; i < 8; i++) {
    let mine: boolean;
    try {
      // mountinfo fields: 3 is the mount's root inside its filesystem (the bind source), 4 the mount point.
      const source = `/${dir.split("/").slice(-2).join("/")}/etc`; // "/runctl-slurm/<id>/etc", whatever fs /var/tmp is on
      mine = readFileSync(`/proc/${pid}/mountinfo`, "utf8")
        .split("\n")
        .map((l) => l.split(" "))
        .some((f) => f[4] === "/etc/slurm" && (f[3] ?? "").includes(source));
    } catch {
      return; // the host is gone, and its mounts with it
    }
    if (!mine) return;
    // Also the host's PID namespace: umount reads /proc/self/mountinfo, and the host's /proc shows only its own processes.
    await sh("nsenter", ["-t", String(pid), "-m", "-p", "--", "umount", "-l", "/etc/slurm"], { allowFail: true });
  }
}

/** Stops the daemons (slurmds first), kills what they left, unmounts /etc/slurm in the hosts, removes the folder. */
async function teardown(dir: string, record: OwnerRecord): Promise<void> {
  const daemons = [...record.daemons].reverse(); // slurmds, slurmctld, munged: the reverse of starting
  await stopProcesses(daemons.slice(0, -1), 10_000);
  await stopProcesses(daemons.slice(-1), 5_000);
  await killProcessesUsing(dir); // slurmstepd and jobs a dead slurmd left behind
  for (const h of record.hosts) if (refAlive(h)) await unmountSlurmEtc(h.pid, dir);
  rmSync(dir, { recursive: true, force: true });
}

/** The last lines of every daemon log, for failure messages. */
function logTails(logDir: string): string {
  if (!existsSync(logDir)) return "";
  return readdirSync(logDir)
    .map((f) => `--- ${f}\n${readFileSync(join(logDir, f), "utf8").split("\n").slice(-15).join("\n")}`)
    .join("\n");
}

/** Tears down clusters whose owning test process died without stopping them. */
async function sweepStaleClusters(): Promise<void> {
  if (!existsSync(SLURM_STATE_ROOT)) return;
  for (const name of readdirSync(SLURM_STATE_ROOT)) {
    const dir = join(SLURM_STATE_ROOT, name);
    let record: OwnerRecord | undefined;
    try {
      record = JSON.parse(readFileSync(join(dir, "owner.json"), "utf8")) as OwnerRecord;
    } catch {
      // owner.json is written right after the folder: missing for long means its starter crashed.
      try {
        if (Date.now() - statSync(dir).mtimeMs > 10 * 60_000) {
          await killProcessesUsing(dir);
          rmSync(dir, { recursive: true, force: true });
        }
      } catch {
        // gone meanwhile
      }
      continue;
    }
    if (refAlive({ pid: record.ownerPid, start: record.ownerStart })) continue;
    for (const d of record.daemons) signalRef(d, "SIGKILL");
    await teardown(dir, record);
  }
}
