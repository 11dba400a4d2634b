/**
 * The slurm.conf of a test cluster (test/support/slurm.ts) and parsers for Slurm's one-line records.
 * Pure functions: no processes, no files.
 */

/** One node of the cluster: a test host. */
export interface SlurmNodeSpec {
  /** Node name = the test host's name and hostname. */
  readonly name: string;
  readonly address: string;
}

/** Timing knobs of a test cluster; every field has a default tuned for tests. */
export interface SlurmTimings {
  /**
   * Seconds a job step credential lives. Slurm also holds a requeued job back this long
   * (`Reason=BeginTime`) before it may start again: the default 120 s is cut to 10 s here.
   * @defaultValue 10
   */
  readonly credExpireS?: number;
  /** Seconds between SIGTERM and SIGKILL when a job is cancelled, requeued or times out. @defaultValue 5 */
  readonly killWaitS?: number;
  /** Seconds a finished job stays visible to `squeue`/`scontrol show job`. @defaultValue 60 */
  readonly minJobAgeS?: number;
  /** Seconds without an answer from a slurmd before its node is marked DOWN. @defaultValue 20 */
  readonly slurmdTimeoutS?: number;
  /** Seconds without slurmctld before the daemons give up on it. @defaultValue 20 */
  readonly slurmctldTimeoutS?: number;
}

/** Everything {@link slurmConf} needs. */
export interface SlurmConfInput extends SlurmTimings {
  /** Unique per cluster, lower case (Slurm keeps it in the state folder). */
  readonly clusterName: string;
  /** The cluster's folder on this machine (state, spool, logs, pid files). */
  readonly stateDir: string;
  /** munged's socket, reachable from every test host. */
  readonly mungeSocket: string;
  /** Node 0 runs slurmctld as well. */
  readonly nodes: readonly SlurmNodeSpec[];
  /**
   * Hardware words of every node, from `slurmd -C` (e.g. `CPUs=2 Boards=1 SocketsPerBoard=1
   * CoresPerSocket=2 ThreadsPerCore=1 RealMemory=23000`): the hosts share this machine's CPUs.
   */
  readonly hardware: string;
}

/** Names of the partitions every test cluster has: `main` (the default, every node) and `debug`. */
export const SLURM_PARTITIONS = { main: "main", other: "debug" } as const;

/**
 * The slurm.conf text. No accounting database (`squeue`/`scontrol` are the only queries), no cgroup
 * plugins (process tracking by /proc), root daemons, everything under `stateDir`.
 */
export function slurmConf(c: SlurmConfInput): string {
  const ctl = c.nodes[0];
  if (!ctl) throw new Error("A Slurm cluster needs at least one node.");
  const d = c.stateDir;
  const lines = [
    "# runctl test cluster (test/support/slurm.ts); every path is this cluster's own",
    `ClusterName=${c.clusterName}`,
    `SlurmctldHost=${ctl.name}(${ctl.address})`,
    "SlurmUser=root",
    "SlurmdUser=root",
    "AuthType=auth/munge",
    "CredType=cred/munge",
    // cred_expire also sets how long a requeued job waits before it may run again.
    `AuthInfo=socket=${c.mungeSocket},cred_expire=${c.credExpireS ?? 10}`,
    `StateSaveLocation=${d}/state`,
    `SlurmdSpoolDir=${d}/spool/%n`,
    `SlurmctldPidFile=${d}/run/slurmctld.pid`,
    `SlurmdPidFile=${d}/run/slurmd.%n.pid`,
    `SlurmctldLogFile=${d}/log/slurmctld.log`,
    `SlurmdLogFile=${d}/log/slurmd.%n.log`,
    "SlurmctldDebug=info",
    "SlurmdDebug=info",
    "ProctrackType=proctrack/linuxproc",
    "TaskPlugin=task/none",
    "SelectType=select/cons_tres",
    "SelectTypeParameters=CR_CPU",
    "SwitchType=switch/none",
    "MpiDefault=none",
    "JobAcctGatherType=jobacct_gather/none",
    "AccountingStorageType=accounting_storage/none",
    "JobCompType=jobcomp/none",
    "MailProg=/bin/true",
    "ReturnToService=2",
    `SlurmctldTimeout=${c.slurmctldTimeoutS ?? 20}`,
    `SlurmdTimeout=${c.slurmdTimeoutS ?? 20}`,
    `KillWait=${c.killWaitS ?? 5}`,
    `MinJobAge=${c.minJobAgeS ?? 60}`,
    // A backfill pass every second (default 30 s): a job whose BeginTime passed (a requeued job) starts
    // within a second of it, not at the next 30 s pass.
    "SchedulerParameters=bf_interval=1",
    "InactiveLimit=0",
    "Waittime=0",
    ...c.nodes.map((n) => `NodeName=${n.name} NodeHostname=${n.name} NodeAddr=${n.address} ${c.hardware} State=UNKNOWN`),
    `PartitionName=${SLURM_PARTITIONS.main} Nodes=ALL Default=YES MaxTime=INFINITE State=UP`,
    `PartitionName=${SLURM_PARTITIONS.other} Nodes=ALL Default=NO MaxTime=INFINITE State=UP`,
  ];
  return `${lines.join("\n")}\n`;
}

/**
 * The hardware words of `slurmd -C` output (CPUs … RealMemory), RealMemory lowered by 5 % so free
 * memory drifting does not make the node's configuration invalid.
 */
export function hardwareWords(slurmdC: string): string {
  const line = slurmdC.split("\n").find((l) => l.startsWith("NodeName="));
  if (!line) throw new Error(`Unexpected slurmd -C output: ${slurmdC}`);
  const words = line
    .split(/\s+/)
    .filter((w) => /^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=\d+$/.test(w))
    .map((w) => (w.startsWith("RealMemory=") ? `RealMemory=${Math.max(1, Math.floor(Number(w.slice(11)) * 0.95))}` : w));
  if (!words.some((w) => w.startsWith("CPUs="))) throw new Error(`slurmd -C printed no CPUs: ${line}`);
  return words.join(" ");
}

/**
 * Parses one record of `scontrol -o show job|node|partition` (`Key=value` words; a value may contain
 * spaces, e.g. `Reason=` texts or paths, so a word only starts a new key when it looks like `Key=`).
 */
export function parseScontrolRecord(line: string): Record<string, string> {
  const out: Record<string, string> = {};
  let key: string | undefined;
  for (const word of line.trim().split(" ")) {
    const m = /^([A-Za-z][A-Za-z0-9_:/]*)=(.*)$/.exec(word);
    if (m && (key === undefined || /^[A-Z]/.test(m[1]!))) {
      key = m[1]!;
      out[key] = m[2]!;
    } else if (key !== undefined) out[key] += ` ${word}`;
  }
  return out;
}
