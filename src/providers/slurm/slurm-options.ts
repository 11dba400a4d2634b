import { RunctlError } from "../../errors/runctl-error.js";
import { parseHost, type SshHost } from "../ssh-hosts/ssh-hosts-provider.js";
import type { RunctlLogger } from "../../util/logger.js";

/** Options of {@link slurm}. Everything but `login` is optional. */
export interface SlurmOptions {
  /**
   * The cluster's login node, reached over SSH with its host key verified (`"user@host:port"` or
   * {@link SshHost}). Its `python` runs the agent on every node. Runs live under `workdir`.
   */
  readonly login: SshHost | string;
  /** `--partition` (one, or a comma list Slurm picks from). @defaultValue the cluster's default partition */
  readonly partition?: string | undefined;
  /** `--account` to charge. @defaultValue your default account */
  readonly account?: string | undefined;
  /** `--qos`. @defaultValue your default QOS */
  readonly qos?: string | undefined;
  /** `--gres` for every node, e.g. `"gpu:1"` or `"gpu:a100:4"`. @defaultValue none */
  readonly gresPerNode?: string | undefined;
  /**
   * `--time` when the run has no `.budget({ maxDurationMs })` (which wins): milliseconds, or Slurm's
   * own format (`"90"`, `"4:00:00"`, `"2-00:00:00"`). @defaultValue the partition's limit
   */
  readonly timeLimit?: number | string | undefined;
  /**
   * More `sbatch` options, one `--name` or `--name=value` each (`["--constraint=a100",
   * "--exclusive"]`). Options runctl sets itself (nodes, tasks, output, signal, requeue, time,
   * partition, …) are refused: use the fields above.
   */
  readonly sbatchArgs?: readonly string[] | undefined;
  /**
   * runctl's folder on the cluster's shared filesystem (the agent, synced code, venvs, run folders):
   * absolute, or relative to your home on the login node. Every node must see it at the same path.
   * @defaultValue `.runctl` in your home
   */
  readonly workdir?: string | undefined;
  /** How often the job's state is read while it waits in the queue. @defaultValue 2000 */
  readonly pollMs?: number | undefined;
  /** Receives warnings (an insecure host key opt-out). @defaultValue `process.emitWarning` */
  readonly onWarning?: ((message: string) => void) | undefined;
  /** Debug output of the login node's SSH transport (unless `login` sets its own `logger`) and of the agent. @defaultValue undefined (silent) */
  readonly logger?: RunctlLogger | undefined;
}

/** {@link SlurmOptions} checked, with the login parsed; each field as in {@link SlurmOptions}. */
export interface ResolvedSlurmOptions {
  /** The login node. */
  readonly login: SshHost;
  /** `--partition`. */
  readonly partition: string | undefined;
  /** `--account`. */
  readonly account: string | undefined;
  /** `--qos`. */
  readonly qos: string | undefined;
  /** `--gres`, per node. */
  readonly gresPerNode: string | undefined;
  /** Slurm's `--time` value. */
  readonly timeLimit: string | undefined;
  /** More sbatch options, checked. */
  readonly sbatchArgs: readonly string[];
  /** runctl's folder (absolute, or relative to the login user's home). */
  readonly workdir: string | undefined;
  /** How often a queued job is polled. */
  readonly pollMs: number;
}

const KNOWN = new Set(["login", "partition", "account", "qos", "gresPerNode", "timeLimit", "sbatchArgs", "workdir", "pollMs", "onWarning", "logger"]);
// One token on an #SBATCH line: no blanks, quotes, backslashes or shell characters.
const NAME = /^[A-Za-z0-9_.+-]+$/;
const PARTITIONS = /^[A-Za-z0-9_.+-]+(,[A-Za-z0-9_.+-]+)*$/;
const GRES = /^[A-Za-z0-9_]+(:[A-Za-z0-9_.-]+)*(,[A-Za-z0-9_]+(:[A-Za-z0-9_.-]+)*)*$/;
const TIME = /^(\d+-\d{1,2}(:\d{1,2}){0,2}|\d+(:\d{1,2}){0,2}|UNLIMITED|INFINITE)$/;
const ARG = /^--[a-z][a-z0-9-]*(=[A-Za-z0-9_.,:@%+=/-]+)?$/;
const DIR = /^[A-Za-z0-9_.+/-]+$/;
/** sbatch options runctl sets from the run itself; a user value would break the job's contract. */
const MANAGED = [
  "nodes", "ntasks", "ntasks-per-node", "output", "error", "comment", "job-name", "signal", "requeue", "no-requeue",
  "open-mode", "parsable", "chdir", "wrap", "test-only", "array", "time", "partition", "account", "qos", "gres",
  "input", "export", "export-file", "wait", "hold", "dependency", "kill-on-invalid-dep", "no-kill", "nodelist", "test-only",
];

/** Checks {@link SlurmOptions} before anything connects: a bad value is INVALID_ARGUMENT. */
export function resolveSlurmOptions(options: SlurmOptions): ResolvedSlurmOptions {
  const bad = (message: string): never => {
    throw new RunctlError("INVALID_ARGUMENT", `slurm(): ${message}`);
  };
  if (typeof options !== "object" || options === null) bad("needs an options object with `login`.");
  const unknown = Object.keys(options).filter((k) => !KNOWN.has(k));
  if (unknown.length > 0) bad(`unknown option ${unknown.map((k) => JSON.stringify(k)).join(", ")}.`);
  if (options.login === undefined) bad("needs `login`: the cluster's login node (\"user@host\").");
  const login = parseHost(options.login, "slurm() login");
  const word = (name: string, value: string | undefined, pattern: RegExp, what: string): string | undefined => {
    if (value === undefined) return undefined;
    if (typeof value !== "string" || !pattern.test(value)) bad(`${name} ${JSON.stringify(value)} is not ${what}.`);
    return value;
  };
  const partition = word("partition", options.partition, PARTITIONS, "a partition name (or a comma list of them)");
  const account = word("account", options.account, NAME, "an account name");
  const qos = word("qos", options.qos, NAME, "a QOS name");
  const gresPerNode = word("gresPerNode", options.gresPerNode, GRES, 'a gres like "gpu:1" or "gpu:a100:4"');
  let timeLimit: string | undefined;
  if (typeof options.timeLimit === "number") {
    if (!Number.isFinite(options.timeLimit) || options.timeLimit <= 0) bad(`timeLimit ${options.timeLimit} is not a positive number of milliseconds.`);
    timeLimit = slurmMinutes(options.timeLimit);
  } else {
    timeLimit = word("timeLimit", options.timeLimit, TIME, 'a Slurm time ("90", "4:00:00", "2-00:00:00") or milliseconds');
  }
  const sbatchArgs = options.sbatchArgs ?? [];
  if (!Array.isArray(sbatchArgs)) bad("sbatchArgs must be a list of strings.");
  for (const arg of sbatchArgs) {
    if (typeof arg !== "string" || !ARG.test(arg)) bad(`sbatchArgs: ${JSON.stringify(arg)} is not one "--name" or "--name=value" (no blanks or quotes).`);
    const name = arg.slice(2).split("=")[0]!;
    // sbatch accepts any unique prefix of a long option (`--partitio=`): a prefix of ours is ours.
    const managed = MANAGED.find((m) => m === name) ?? MANAGED.find((m) => m.startsWith(name));
    if (managed) bad(`sbatchArgs: runctl sets --${managed} itself${["time", "partition", "account", "qos", "gres"].includes(managed) ? ` (use the \`${managed === "gres" ? "gresPerNode" : managed === "time" ? "timeLimit" : managed}\` option)` : ""}.`);
  }
  const workdir = options.workdir;
  if (workdir !== undefined && (typeof workdir !== "string" || !DIR.test(workdir) || workdir.split("/").includes(".."))) {
    bad(`workdir ${JSON.stringify(workdir)} must be a path of letters, digits and ._+-/ without "..".`);
  }
  const pollMs = options.pollMs ?? 2000;
  if (!Number.isFinite(pollMs) || pollMs < 100) bad(`pollMs ${pollMs} must be at least 100.`);
  return { login, partition, account, qos, gresPerNode, timeLimit, sbatchArgs: [...sbatchArgs], workdir, pollMs };
}

/** Milliseconds as Slurm's `--time` in whole minutes, rounded up (Slurm's smallest unit is a minute). */
export function slurmMinutes(ms: number): string {
  return String(Math.max(1, Math.ceil(ms / 60_000)));
}
