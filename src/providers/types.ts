import type { BatchEngine } from "./batch-types.js";
import type { SweepReport } from "./sweep-types.js";
import type { Transport } from "../transport/types.js";
import type { DoctorCheck } from "../util/doctor-check.js";
import type { RunctlLogger } from "../util/logger.js";

/** JSON facts about a machine, kept in the run journal so `Runctl.attach` can reach it again. */
export interface MachineRecord {
  /** The provider's name (`local`, `ssh-hosts`, `ec2`). */
  readonly provider: string;
  /** The machine's id within its provider. */
  readonly id: string;
  /** Everything else the provider needs to reconnect (never secrets). */
  readonly [key: string]: unknown;
}

/**
 * A machine a provider handed out: where it is, how to talk to it, and what it costs.
 *
 * @example
 * ```ts
 * const m = await local().provision({ runId: "r1" });
 * const r = await m.transport.exec(["hostname"]);
 * ```
 */
export interface Machine {
  /** The provider's id for this machine. */
  readonly id: string;
  /** The provider's name. */
  readonly provider: string;
  /** Host name or address, for messages. */
  readonly address: string;
  /**
   * The address other machines of the same network reach it at, when it differs from `address`
   * (an EC2 instance reached on its public IP): a multi-node gang's nodes talk over it. @defaultValue `address`
   */
  readonly privateAddress?: string | undefined;
  /** How to run commands and move files on it. */
  readonly transport: Transport;
  /** runctl's absolute root folder on the machine (runs, venvs, synced code, the agent). */
  readonly rootDir: string;
  /** The Python 3 interpreter on the machine that runs the agent. @defaultValue `"python3"` */
  readonly python: string;
  /** Whether the machine sees this process's filesystem (true only for `local()`). */
  readonly sharesLocalFilesystem: boolean;
  /** Tags the provider put on resources it created for this machine. */
  readonly tags: Readonly<Record<string, string>>;
  /** Price per hour in USD (0 for machines you already own). */
  readonly hourlyPriceUsd: number;
  /** JSON facts for reattaching. */
  readonly record: MachineRecord;
  /**
   * The machine's instance-metadata service, polled by the agent for spot interruption notices
   * (IMDSv2). Absent: no polling (machines that are not cloud instances).
   */
  readonly imds?: { readonly endpoint: string; readonly pollMs?: number | undefined } | undefined;
  /**
   * How the agent powers the machine off when a time or budget limit is hit, or when a finished run
   * was not released in time (a cloud instance whose shutdown terminates it). Absent: never.
   * `cancelBootPowerOff`: the machine powers itself off some minutes after boot unless this
   * command (run once by the agent when it starts) cancels that (an EC2 instance launched by
   * runctl, so that a client that dies before the agent starts does not leave it running).
   */
  readonly shutdown?: { readonly command: readonly string[]; readonly afterRunMs: number; readonly cancelBootPowerOff?: readonly string[] | undefined } | undefined;
  /** When the machine started costing money (epoch ms), for accrued cost. @defaultValue when it was handed out */
  readonly launchedAtMs?: number | undefined;
  /**
   * How to stop a run whose agent runs on another machine than this transport reaches (a Slurm job's
   * nodes, followed through the login node): the engine calls it instead of the agent's `signal`
   * command (which signals by pid), and never reaps by pid on it. Absent: the agent runs here.
   */
  readonly signalRun?: ((runDir: string, how: "interrupt" | "kill") => Promise<void>) | undefined;
}

/**
 * What {@link Provider.doctor} found: its own checks, and machines that exist already (this machine,
 * an SSH host) for the engine's checks of Python, disk and GPU. The engine closes their transports.
 *
 * @example
 * ```ts
 * const report: ProviderDoctorReport = { checks: [{ id: "transport", title: "this machine", status: "ok", detail: "local" }], machines: [] };
 * ```
 */
export interface ProviderDoctorReport {
  readonly checks: readonly DoctorCheck[];
  readonly machines: readonly Machine[];
}

/** What the engine asks a provider for. */
export interface ProvisionRequest {
  /** The run this machine is for; used in tags and names. */
  readonly runId: string;
  /** Machine ids to avoid when there is a choice (the machines a recovering run just lost). */
  readonly avoid?: readonly string[] | undefined;
  /**
   * The run's time budget (`.budget({ maxDurationMs })`), when it has one: a cloud provider lets
   * what it creates expire after this plus a margin. @defaultValue none (the provider's default expiry)
   */
  readonly maxDurationMs?: number | undefined;
  /**
   * This machine's place in a multi-node gang (`.nodes(n)`): the provider may share what the gang's
   * machines have in common (EC2: one security group that lets the nodes reach each other).
   */
  readonly gang?: { readonly rank: number; readonly size: number } | undefined;
}

/** Cloud truth about a machine. */
export type MachineState = "pending" | "running" | "stopping" | "stopped" | "terminated" | "interrupted" | "unreachable" | "unknown";

/** A resource a provider would create, shown by `.plan()`. */
export interface PlannedResource {
  /** Kind of resource (`instance`, `volume`, `security-group`, `host-lease`, ...). */
  readonly kind: string;
  /** What it is, in words. */
  readonly description: string;
  /** Tags it would carry. */
  readonly tags: Readonly<Record<string, string>>;
}

/** Options of {@link Provider.sweep} and `Runctl.sweep`. */
export interface SweepOptions {
  /** Report what would be deleted, deleting nothing. @defaultValue false */
  readonly dryRun?: boolean | undefined;
  /** Whose resources (`runctl:owner`): `"all"` widens to every owner. @defaultValue this process's `user@host` */
  readonly owner?: string | undefined;
  /**
   * Also sweep expired resources whose run looks alive (an instance of it still runs and the run
   * is not known to be over). Without it a live run is never swept. @defaultValue false
   */
  readonly force?: boolean | undefined;
  readonly signal?: AbortSignal | undefined;
}

/** A provider's price estimate. */
export interface ProviderEstimate {
  /** Expected price per hour in USD. */
  readonly hourlyPriceUsd: number;
  /** Where the price comes from (`catalog 2026-11-01`, `spot market us-east-1a`, `given`). */
  readonly basis: string;
}

/** What a provider says about itself for `.plan()`. */
export interface ProviderPlan {
  /** Resources that would be created. */
  readonly resources: readonly PlannedResource[];
  /** Expected price per hour in USD; undefined when no price is known (never reported as 0). */
  readonly hourlyPriceUsd: number | undefined;
  /** A batch provider's job script, as it would be submitted (Slurm: the sbatch script). */
  readonly batchScript?: string | undefined;
  /** A batch provider's steps, in words, replacing "provision" and "release" in the plan. */
  readonly steps?: { readonly before: readonly string[]; readonly after: readonly string[] } | undefined;
}

/** The run's shape, for a provider whose plan depends on it (a batch job's script). */
export interface ProviderPlanRequest {
  readonly runId: string;
  /** `.nodes(n)`: machines in the gang. @defaultValue 1 */
  readonly nodes?: number | undefined;
  /** `.budget({ maxDurationMs })`. */
  readonly maxDurationMs?: number | undefined;
  /** The trainer's grace after SIGTERM (`train({ graceMs })`). */
  readonly graceMs?: number | undefined;
  /** Whether the run recovers (`.recover()`): a batch job may then be requeued. */
  readonly recover?: boolean | undefined;
  /** Where the agent would be installed under a root folder. */
  readonly agentPathOn?: ((rootDir: string) => string) | undefined;
}

/**
 * Where machines come from. Small and structural: implement it to add a provider.
 * `describe` and `reattach` are optional capabilities.
 *
 * @example
 * ```ts
 * const provider: Provider = local();
 * const machine = await provider.provision({ runId: "r1" });
 * await provider.release(machine);
 * ```
 */
export interface Provider {
  /** The provider's name, as recorded in journals. */
  readonly name: string;
  /** Whether its machines see this process's filesystem (local folders are reachable). */
  readonly sharesLocalFilesystem: boolean;
  /**
   * Its machines are reached by a transport whose stdin leaves a copy ({@link Transport.stdinLeavesCopy},
   * e.g. EC2 over SSM): credentials are never forwarded to them, and a storage that insists on it
   * (`forwardCredentials: true`) is refused at the plan call, before anything is created.
   * @defaultValue false
   */
  readonly stdinLeavesCopy?: boolean | undefined;
  /** The `logger` the provider was made with; runs on its machines relay the agent's debug lines to it. @defaultValue undefined (silent) */
  readonly logger?: RunctlLogger | undefined;
  /** Hands out a ready machine (reachable, Python 3 present, root folder known). */
  provision(request: ProvisionRequest, options?: { readonly signal?: AbortSignal | undefined }): Promise<Machine>;
  /** Gives a machine back (a pool host is freed; a cloud instance is terminated). Idempotent. */
  release(machine: Machine, options?: { readonly signal?: AbortSignal | undefined }): Promise<void>;
  /** Cloud truth about a machine. */
  describe?(machine: Machine, options?: { readonly signal?: AbortSignal | undefined }): Promise<MachineState>;
  /**
   * A new transport to a machine from its record, without leasing it (reading checkpoints kept on
   * the machine after the run). The caller closes it.
   */
  transportFor?(record: MachineRecord): Transport;
  /** Reconnects to a machine from its journal record (for `Runctl.attach`). */
  reattach?(record: MachineRecord, options?: { readonly signal?: AbortSignal | undefined }): Promise<Machine>;
  /** Dry-run facts for `.plan()`. No side effects. */
  plan?(request?: ProviderPlanRequest): ProviderPlan;
  /** The price a run would pay now (may ask the cloud, e.g. the spot market). Read-only. */
  estimate?(options?: { readonly signal?: AbortSignal | undefined }): Promise<ProviderEstimate>;
  /** Finds and deletes leftovers of runs that are over or expired (only what runctl tagged). */
  sweep?(options: SweepOptions): Promise<SweepReport>;
  /**
   * Checks for `runctl doctor`, before a first run: can its machines be reached (SSH: connected, host
   * key verified), may the account do what a run needs (EC2: credentials, IAM actions by DryRun).
   * Creates nothing. Returns its own checks and the machines it could reach without creating
   * anything, on which the engine then checks Python, disk and GPU (and closes their transports).
   */
  doctor?(options?: { readonly signal?: AbortSignal | undefined }): Promise<ProviderDoctorReport>;
  /**
   * Renews what marks a machine as still in use (EC2: `runctl:expires-at` on the instance and the
   * resources made for it), so that a sweep never takes a machine whose run is being followed.
   * The engine calls it when it starts following a run and then every {@link Provider.keepAliveEveryMs}.
   */
  keepAlive?(machine: Machine, options?: { readonly signal?: AbortSignal | undefined }): Promise<void>;
  /**
   * The most machines it can hand out to one run at once (`.nodes(n)` beyond this is refused at the
   * plan call): 1 for this machine, a pool's size. @defaultValue no limit
   */
  readonly maxNodes?: number | undefined;
  /** How often the engine calls {@link Provider.keepAlive} while following. @defaultValue 600000 (10 minutes) */
  readonly keepAliveEveryMs?: number | undefined;
  /**
   * A cluster engine's scheduler (Slurm): `provision` hands out the login machine, whose root folder
   * is on the cluster's shared filesystem, and the run is one batch job whose allocation is the gang
   * (docs/decisions/0017-cluster-engine-providers.md). Absent: machines are provisioned one by one.
   */
  readonly batch?: BatchEngine | undefined;
}
