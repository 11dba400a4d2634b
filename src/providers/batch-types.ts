import type { Machine } from "./types.js";

/** One run's batch job, as the engine asks a {@link BatchEngine} for it. */
export interface BatchJobRequest {
  /** The run; the job is named and tagged with it. */
  readonly runId: string;
  /**
   * The run's folder on the cluster's shared filesystem: `job.json`, the job script, the batch
   * output, and `attempts/<attempt>/node<rank>/` (each node's run folder).
   */
  readonly jobDir: string;
  /** Machines in the allocation (`.nodes(n)`), one agent each. */
  readonly nodes: number;
  /** The interpreter that runs the agent on the nodes. */
  readonly python: string;
  /** The agent on the shared filesystem. */
  readonly agentPath: string;
  /** `.budget({ maxDurationMs })`: the job's time limit. @defaultValue the provider's own limit, else the partition's */
  readonly maxDurationMs?: number | undefined;
  /** The trainer's grace after SIGTERM: the warning before the time limit comes this much earlier (and more). */
  readonly graceMs: number;
  /** Whether the scheduler may requeue the job (preemption, a node failure): the run has `.recover()`. */
  readonly requeue: boolean;
}

/**
 * Where a batch job stands: `pending` (queued, or requeued and waiting to run again), `running`,
 * `completing` (its processes are being ended: it may end, or be requeued, and which is not known
 * until this passes), `ended` (completed, failed, cancelled, timed out), `gone` (the scheduler no
 * longer knows it).
 */
export type BatchJobPhase = "pending" | "running" | "completing" | "ended" | "gone";

/** A batch job as the scheduler reports it. */
export interface BatchJobStatus {
  /** The scheduler's job id. */
  readonly id: string;
  readonly phase: BatchJobPhase;
  /** The scheduler's state word (Slurm: `PENDING`, `RUNNING`, `COMPLETED`, `CANCELLED`, `TIMEOUT`, `NODE_FAIL`, `PREEMPTED`, …). */
  readonly state: string;
  /** Why it waits (Slurm's `Reason`: `Resources`, `Priority`, `BeginTime`, …); undefined when none. */
  readonly reason: string | undefined;
  /** How often the scheduler requeued it so far (Slurm's `Restarts`). */
  readonly restarts: number;
  /** The allocation's host names, node 0 first (empty until it runs). */
  readonly hosts: readonly string[];
  /** The exit status as the scheduler reports it (Slurm: `code:signal`). */
  readonly exitCode: string | undefined;
}

/** What the scheduler said of a job it would accept. */
export interface BatchCheck {
  /** Things the run should know (a kill wait shorter than the trainer's grace), in words. */
  readonly warnings: readonly string[];
}

/** Options of a {@link BatchEngine} call. */
export interface BatchCallOptions {
  /** Stops waiting for the call (a submission already accepted stays submitted). */
  readonly signal?: AbortSignal | undefined;
}

/**
 * The part of a cluster engine's provider that talks to its scheduler. Every call goes through the
 * login machine the provider handed out; the engine keeps the rest (agent, sync, follow, recovery).
 */
export interface BatchEngine {
  /** The scheduler's name (`slurm`). */
  readonly scheduler: string;
  /** How often the engine polls {@link BatchEngine.status} while a job waits. */
  readonly pollMs: number;
  /** The job script for a request, exactly as it would be submitted. Pure. */
  script(request: BatchJobRequest): string;
  /**
   * Asks the scheduler whether it would accept the job, submitting nothing. A rejection (unknown
   * partition or account, invalid gres, a limit) is a `JOB_REJECTED` error with the scheduler's message.
   */
  check(login: Machine, request: BatchJobRequest, options?: BatchCallOptions): Promise<BatchCheck>;
  /** Writes the job script into `jobDir` and submits it; returns the job id. Rejections as in {@link BatchEngine.check}. */
  submit(login: Machine, request: BatchJobRequest, options?: BatchCallOptions): Promise<string>;
  /** The job's state now. */
  status(login: Machine, jobId: string, options?: BatchCallOptions): Promise<BatchJobStatus>;
  /** Ends the job's current attempt and queues it again (it keeps its id). */
  requeue(login: Machine, jobId: string, options?: BatchCallOptions): Promise<void>;
  /** Cancels the job at once. Idempotent: a job that is over is left alone. */
  cancel(login: Machine, jobId: string, options?: BatchCallOptions): Promise<void>;
  /** The last lines of the job's batch output (what its script printed), for error messages. */
  outputTail(login: Machine, jobDir: string, jobId: string, options?: BatchCallOptions): Promise<string>;
  /**
   * Node `rank` of an attempt as the engine follows it: the login machine's transport and folders,
   * the node's host name as its address, and a {@link Machine.signalRun} that signals the job.
   */
  nodeMachine(login: Machine, host: string, rank: number, jobId: string): Machine;
}
