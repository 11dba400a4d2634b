import type { RunInterruption } from "./run-result.js";

/** The phases a run goes through, in order (`recovering` only after an interruption). */
export type RunPhase = "provisioning" | "syncing" | "queued" | "setup" | "data" | "training" | "recovering" | "teardown" | "done";

/** How a run ended. `detached` means this client stopped following; the run itself goes on. */
export type RunStatus = "succeeded" | "failed" | "canceled" | "interrupted" | "detached";

/** Fields every event has. */
export interface RunEventBase {
  /** Position in the run's event stream: 1, 2, 3, ... with no gaps, also across `Runctl.attach`. */
  readonly seq: number;
  /** When the client recorded it (ISO 8601). */
  readonly time: string;
  /** The run it belongs to. */
  readonly runId: string;
}

/** The run entered a phase. */
export interface PhaseEvent extends RunEventBase {
  /** Discriminator: always `"phase"`. */
  readonly type: "phase";
  /** The phase the run has just entered. */
  readonly phase: RunPhase;
  /** `queued`: the cluster's job id. */
  readonly job?: string | undefined;
  /** `queued`: why the job waits, in the scheduler's words (Slurm: `Priority`, `Resources`, `BeginTime`, …). */
  readonly reason?: string | undefined;
}

/** One line of setup or trainer output (stdout and stderr, as written to `train.log`). */
export interface LogEvent extends RunEventBase {
  /** Discriminator: always `"log"`. */
  readonly type: "log";
  /** The line, without its newline. */
  readonly line: string;
  /** Byte offset in `train.log` just past this line; a resume point for `.logs()`. */
  readonly offset: number;
  /** The node (rank) that printed it, in a multi-node run (`.nodes()`); absent on one machine. */
  readonly node?: number | undefined;
}

/** A metric line (`RUNCTL_METRIC {...}` or the user's pattern) parsed into values. */
export interface MetricEvent extends RunEventBase {
  /** Discriminator: always `"metric"`. */
  readonly type: "metric";
  /** The parsed values, e.g. `{ step: 10, loss: 0.3 }`. */
  readonly values: Readonly<Record<string, unknown>>;
  /** `values.step` when it is a number. */
  readonly step?: number | undefined;
  /** The node (rank) it came from, in a multi-node run (metrics are read from node 0). */
  readonly node?: number | undefined;
}

/** The code reached the machine. */
export interface SyncEvent extends RunEventBase {
  /** Discriminator: always `"sync"`. */
  readonly type: "sync";
  /** Files in the synced tree (after ignore rules). */
  readonly files: number;
  /** Total bytes of the synced tree. */
  readonly bytes: number;
  /** Files actually sent (new or changed); 0 when the machine was already up to date. */
  readonly uploadedFiles: number;
  /** Content bytes actually sent. */
  readonly uploadedBytes: number;
  /** Files deleted on the machine because they no longer exist locally. */
  readonly deletedFiles: number;
  /** Wall time of the sync, retries included. */
  readonly durationMs: number;
}

/** The Python environment is ready. */
export interface SetupEvent extends RunEventBase {
  /** Discriminator: always `"setup"`. */
  readonly type: "setup";
  /** The venv's path on the machine. */
  readonly venv: string;
  /** Whether an existing venv (same requirements hash) was reused. */
  readonly reused: boolean;
  /** Time taken to create or reuse the venv and install into it. */
  readonly durationMs: number;
}

/** A checkpoint was restored before training started (`RUNCTL_RESUME_FROM`). */
export interface ResumedEvent extends RunEventBase {
  /** Discriminator: always `"resumed"`. */
  readonly type: "resumed";
  /** Name of the restored checkpoint. */
  readonly name: string;
  /** Training step of the restored checkpoint; null when unknown. */
  readonly step: number | null;
  /** The run that committed the restored checkpoint. */
  readonly fromRunId: string;
  /** Path on the machine the trainer resumes from. */
  readonly path: string;
}

/** A checkpoint was committed to storage (its manifest exists; it is now visible to readers). */
export interface CheckpointEvent extends RunEventBase {
  /** Discriminator: always `"checkpoint"`. */
  readonly type: "checkpoint";
  /** The checkpoint's name (its file or folder name in the checkpoint folder). */
  readonly name: string;
  /** Training step: from `<name>.done`, else the last number in the name; null when neither gives one. */
  readonly step: number | null;
  /** Commit number within the run. */
  readonly commitSeq: number;
  /** Number of files committed. */
  readonly files: number;
  /** Total bytes committed. */
  readonly bytes: number;
  /** Where it was stored. */
  readonly location: string;
}

/** The output folder was uploaded (`.outputs()`), after the trainer exited. */
export interface OutputsEvent extends RunEventBase {
  readonly type: "outputs";
  /** Files uploaded. */
  readonly files: number;
  /** Bytes uploaded. */
  readonly bytes: number;
  /** Where they went (`s3://bucket/prefix/<runId>/outputs`). */
  readonly location: string;
}

/** What a {@link ProgressEvent} counts the bytes of. */
export type ProgressPhase = "sync" | "data" | "checkpoint" | "output";

/**
 * Bytes moved so far by a transfer: the code sync (client side), the data download, a checkpoint
 * commit or the output upload (on the machine). Throttled: the first report, then at most one every
 * ~250 ms per transfer, and always the final one, where `bytesDone === bytesTotal` (a transfer on
 * the machine that failed part-way ends with `bytesTotal` lowered to the bytes moved). `bytesDone`
 * never decreases within one transfer (a retried sync starts a new one, with a new `bytesTotal`).
 * `createEventPrinter` renders them as progress bars.
 */
export interface ProgressEvent extends RunEventBase {
  /** Discriminator: always `"progress"`. */
  readonly type: "progress";
  /** What is being moved. */
  readonly phase: ProgressPhase;
  /** Bytes moved so far. */
  readonly bytesDone: number;
  /** Bytes this transfer moves in all (only what changed, for the sync). */
  readonly bytesTotal: number;
  /** The checkpoint's name (`checkpoint`) or the data source's location (`data`); absent otherwise. */
  readonly name?: string | undefined;
  /** The node (rank) it concerns, in a multi-node run. */
  readonly node?: number | undefined;
}

/** The machine received an interruption notice (spot) or was lost. */
export interface InterruptionEvent extends RunEventBase {
  /** Discriminator: always `"interruption"`. */
  readonly type: "interruption";
  /** Why the machine was interrupted, in words. */
  readonly reason: string;
}

/** The run resumed on a new machine after an interruption. */
export interface RecoveredEvent extends RunEventBase {
  /** Discriminator: always `"recovered"`. */
  readonly type: "recovered";
  /** Which recovery this is (1 for the first). */
  readonly attempt: number;
  /** Name of the checkpoint training resumed from; null when it restarted without one. */
  readonly fromCheckpoint: string | null;
}

/** Accrued cost so far. */
export interface CostEvent extends RunEventBase {
  /** Discriminator: always `"cost"`. */
  readonly type: "cost";
  /** Cost accrued so far, in US dollars. */
  readonly usd: number;
  /** Current price per hour of the machine, in US dollars. */
  readonly hourlyUsd: number;
}

/** Something the user should know that does not stop the run. */
export interface WarningEvent extends RunEventBase {
  /** Discriminator: always `"warning"`. */
  readonly type: "warning";
  /** What happened, for people. */
  readonly message: string;
  /** A short machine-readable kind (e.g. `SYNC`, `RECONNECTING`, `SIGNAL`, `CHECKPOINT_NOT_COMMITTED`); absent for most of the agent's own warnings. */
  readonly code?: string | undefined;
  /** The node (rank) it concerns, in a multi-node run. */
  readonly node?: number | undefined;
}

/** The error that ended a run, in JSON form. */
export interface RunErrorInfo {
  /** The error's code (a `RunctlErrorCode`, e.g. `SETUP_FAILED`, `TRAINING_FAILED`). */
  readonly code: string;
  /** What went wrong, for people. */
  readonly message: string;
  /** Last output of the failing step (pip's message for a failed setup). */
  readonly outputTail?: string | undefined;
}

/** The run ended. Always the last event. */
export interface ExitEvent extends RunEventBase {
  /** Discriminator: always `"exit"`. */
  readonly type: "exit";
  /** How the run ended. */
  readonly status: RunStatus;
  /** The trainer's exit code; null if it never ran or was killed by a signal. */
  readonly exitCode: number | null;
  /** The signal that ended the trainer (e.g. `"SIGKILL"`), or null. */
  readonly signal: string | null;
  /** Wall time from `.train()` to the end. */
  readonly durationMs: number;
  /** Why the run failed, when it did. */
  readonly error?: RunErrorInfo | undefined;
  /** Restarts on new machines (`.recover()`). */
  readonly restarts?: number | undefined;
  /** The interruptions it recovered from. */
  readonly interruptions?: readonly RunInterruption[] | undefined;
}

/**
 * Everything a run reports, as a union discriminated on `type`.
 *
 * @example
 * ```ts
 * for await (const e of run) {
 *   if (e.type === "metric") console.log(e.step, e.values["loss"]);
 *   if (e.type === "checkpoint") console.log("saved", e.name);
 * }
 * ```
 */
export type RunEvent =
  | PhaseEvent
  | LogEvent
  | MetricEvent
  | SyncEvent
  | SetupEvent
  | ResumedEvent
  | CheckpointEvent
  | OutputsEvent
  | ProgressEvent
  | InterruptionEvent
  | RecoveredEvent
  | CostEvent
  | WarningEvent
  | ExitEvent;

/** A RunEvent before the journal gives it `seq`, `time` and `runId`. */
export type RunEventInput = RunEvent extends infer E ? (E extends RunEvent ? Omit<E, "seq" | "time" | "runId"> : never) : never;
