import type { RunErrorInfo, RunStatus } from "./events.js";

/** One interruption the run recovered from. */
export interface RunInterruption {
  /** What happened, in words (`spot interruption`, `lost the machine (...)`). */
  readonly reason: string;
  /** The last step the trainer reported before it. */
  readonly atStep: number | null;
  /** The step of the checkpoint the next machine resumed from (null: started over). */
  readonly resumedFromStep: number | null;
  /** Steps trained again because of it: `atStep - resumedFromStep` (0 when the trainer saved on SIGTERM). */
  readonly lostSteps: number | null;
}

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
  readonly error?: RunErrorInfo | undefined;
  /** Restarts on new machines after interruptions (`.recover()`). */
  readonly restarts: number;
  /** Each interruption that led to a restart, with the training steps it cost. */
  readonly interruptions: readonly RunInterruption[];
  /** What the run cost: every machine's price from launch to release (0 on machines you own). */
  readonly cost: {
    /** Accrued cost in US dollars. */
    readonly usd: number;
    /** Price per hour of the last machine, in US dollars. */
    readonly hourlyUsd: number;
  };
  /** Where it ran. */
  readonly machine?: {
    /** The provider's name (`local`, `ssh-hosts`, `ec2`). */
    readonly provider: string;
    /** The machine's id within its provider. */
    readonly id: string;
    /** The machine's host name or address. */
    readonly address: string;
  } | undefined;
}
