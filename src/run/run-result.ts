import type { RunErrorInfo, RunStatus } from "./events.js";

/** A checkpoint committed during the run, as reported by the agent. */
export interface CommittedCheckpoint {
  /** The checkpoint's name. */
  readonly name: string;
  /** Training step, when known; otherwise null. */
  readonly step: number | null;
  /** Commit number within the run. */
  readonly commitSeq: number;
  /** Where it was stored (the checkpoint's folder in storage, as the agent sees it). */
  readonly location: string;
}

/**
 * How a run ended. `status` is derived from the trainer's exit code (the source of truth): exit 0
 * is `succeeded`, anything else `failed`; a cancel is `canceled`.
 *
 * @example
 * ```ts
 * const result = await run;
 * if (result.status !== "succeeded") throw new Error(result.error?.message ?? `exit ${result.exitCode}`);
 * ```
 */
export interface RunResult {
  /** The run's id. */
  readonly runId: string;
  /** How the run ended. */
  readonly status: RunStatus;
  /** The trainer's exit code; null if it never ran or was killed by a signal. */
  readonly exitCode: number | null;
  /** The signal that ended the trainer, if any. */
  readonly signal: string | null;
  /** Wall time from `.train()` to the end. */
  readonly durationMs: number;
  /** Checkpoints committed by this run, oldest first. */
  readonly checkpoints: readonly CommittedCheckpoint[];
  /** Why the run failed (setup output, exit code, time limit). */
  readonly error?: RunErrorInfo;
  /** Restarts after interruptions (recovery arrives with the spot issue). */
  readonly restarts: number;
  /** Where it ran. */
  readonly machine?: {
    /** The provider's name (`local`, `ssh-hosts`, `ec2`). */
    readonly provider: string;
    /** The machine's id within its provider. */
    readonly id: string;
    /** The machine's host name or address. */
    readonly address: string;
  };
}
