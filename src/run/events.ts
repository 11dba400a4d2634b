/** The phases a run goes through, in order (`recovering` only after an interruption). */
export type RunPhase = "provisioning" | "syncing" | "setup" | "data" | "training" | "recovering" | "teardown" | "done";

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
  readonly type: "phase";
  readonly phase: RunPhase;
}

/** One line of setup or trainer output (stdout and stderr, as written to `train.log`). */
export interface LogEvent extends RunEventBase {
  readonly type: "log";
  /** The line, without its newline. */
  readonly line: string;
  /** Byte offset in `train.log` just past this line; a resume point for `.logs()`. */
  readonly offset: number;
}

/** A metric line (`RUNCTL_METRIC {...}` or the user's pattern) parsed into values. */
export interface MetricEvent extends RunEventBase {
  readonly type: "metric";
  /** The parsed values, e.g. `{ step: 10, loss: 0.3 }`. */
  readonly values: Readonly<Record<string, unknown>>;
  /** `values.step` when it is a number. */
  readonly step?: number;
}

/** The code reached the machine. */
export interface SyncEvent extends RunEventBase {
  readonly type: "sync";
  readonly files: number;
  readonly bytes: number;
  readonly uploadedFiles: number;
  readonly uploadedBytes: number;
  readonly deletedFiles: number;
  readonly durationMs: number;
}

/** The Python environment is ready. */
export interface SetupEvent extends RunEventBase {
  readonly type: "setup";
  /** The venv's path on the machine. */
  readonly venv: string;
  /** Whether an existing venv (same requirements hash) was reused. */
  readonly reused: boolean;
  readonly durationMs: number;
}

/** A checkpoint was restored before training started (`RUNCTL_RESUME_FROM`). */
export interface ResumedEvent extends RunEventBase {
  readonly type: "resumed";
  readonly name: string;
  readonly step: number | null;
  readonly fromRunId: string;
  /** Path on the machine the trainer resumes from. */
  readonly path: string;
}

/** A checkpoint was committed to storage (its manifest exists; it is now visible to readers). */
export interface CheckpointEvent extends RunEventBase {
  readonly type: "checkpoint";
  readonly name: string;
  readonly step: number | null;
  /** Commit number within the run. */
  readonly commitSeq: number;
  readonly files: number;
  readonly bytes: number;
  /** Where it was stored. */
  readonly location: string;
}

/** The machine received an interruption notice (spot) or was lost. */
export interface InterruptionEvent extends RunEventBase {
  readonly type: "interruption";
  readonly reason: string;
}

/** The run resumed on a new machine after an interruption. */
export interface RecoveredEvent extends RunEventBase {
  readonly type: "recovered";
  readonly attempt: number;
  readonly fromCheckpoint: string | null;
}

/** Accrued cost so far. */
export interface CostEvent extends RunEventBase {
  readonly type: "cost";
  readonly usd: number;
  readonly hourlyUsd: number;
}

/** Something the user should know that does not stop the run. */
export interface WarningEvent extends RunEventBase {
  readonly type: "warning";
  readonly message: string;
  readonly code?: string;
}

/** The error that ended a run, in JSON form. */
export interface RunErrorInfo {
  readonly code: string;
  readonly message: string;
  /** Last output of the failing step (pip's message for a failed setup). */
  readonly outputTail?: string;
}

/** The run ended. Always the last event. */
export interface ExitEvent extends RunEventBase {
  readonly type: "exit";
  readonly status: RunStatus;
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly durationMs: number;
  readonly error?: RunErrorInfo;
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
  | InterruptionEvent
  | RecoveredEvent
  | CostEvent
  | WarningEvent
  | ExitEvent;

/** A RunEvent before the journal gives it `seq`, `time` and `runId`. */
export type RunEventInput = RunEvent extends infer E ? (E extends RunEvent ? Omit<E, "seq" | "time" | "runId"> : never) : never;
