import pRetry from "p-retry";
import { CommandError, RunctlError, isRunctlError } from "../errors/runctl-error.js";
import type { Machine } from "../providers/types.js";
import type { RunEventInput } from "../run/events.js";
import type { FollowCursor } from "../run/journal.js";

/** The agent's `exit` event (docs/agent-protocol.md). */
export interface AgentExit {
  readonly status: "succeeded" | "failed" | "canceled" | "interrupted";
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly durationMs: number;
  readonly reason: string;
}

/** The agent's `error` event. */
export interface AgentError {
  readonly code: string;
  readonly message: string;
  readonly outputTail?: string | undefined;
}

/** How following ended. */
export type FollowOutcome =
  | { readonly kind: "end"; readonly exit: AgentExit; readonly error: AgentError | undefined }
  | { readonly kind: "lost"; readonly message: string; readonly error: AgentError | undefined }
  | { readonly kind: "host-lost"; readonly message: string; readonly error: AgentError | undefined }
  | { readonly kind: "detached" };

/** What {@link followRun} needs. */
export interface FollowContext {
  readonly machine: Machine;
  readonly agentPath: string;
  readonly agentPython: string;
  readonly runDir: string;
  readonly start: FollowCursor;
  /** Records one event with the cursor just past it. */
  readonly emit: (event: RunEventInput, cursor: FollowCursor) => void;
  readonly metricPattern?: RegExp | undefined;
  /** Aborting stops following (detach); the run on the machine is untouched. */
  readonly signal: AbortSignal;
  /**
   * Stop retrying once the connection has failed without a break for this long: the machine counts
   * as lost (the last error is thrown, with `details.hostLost`). @defaultValue retry for ~3 minutes
   */
  readonly lostAfterMs?: number | undefined;
  /** Called when a dropped connection is being retried. */
  readonly onReconnect?: ((error: RunctlError, attempt: number) => void) | undefined;
}

/**
 * Limits of one `follow` call over a buffered transport (`Transport.buffered`, e.g. SSM): the
 * agent pauses after this long or this many bytes of frames, well under SSM's 24,000-character
 * inline output, and the client calls again from its cursor.
 */
export const BOUNDED_FOLLOW = { maxWaitMs: 2000, maxBytes: 16_000 } as const;

/**
 * Follows a launched run to its end by streaming the agent's `follow` frames, resuming from the
 * byte cursor after a dropped connection (so no line is lost or repeated). A dropped connection is
 * retried with backoff; it never ends the run. Over a buffered transport each call is bounded
 * ({@link BOUNDED_FOLLOW}) and a `pause` frame means "call again from the new cursor" at once.
 */
export async function followRun(ctx: FollowContext): Promise<FollowOutcome> {
  let cursor = ctx.start;
  let pendingError: AgentError | undefined;
  let exit: AgentExit | undefined;
  // Start of the current unbroken run of connection failures (reset by any frame).
  let failingSince: number | undefined;
  // Output of a buffered transport arrives only when the command ends: bounded calls, not one stream.
  const bounded = ctx.machine.transport.buffered === true;

  const once = async (): Promise<FollowOutcome> => {
    for (;;) {
      const outcome = await followCall();
      if (outcome !== "pause") return outcome;
    }
  };

  const followCall = async (): Promise<FollowOutcome | "pause"> => {
    const argv = [ctx.agentPython, ctx.agentPath, "follow", ctx.runDir, "--log-offset", String(cursor.log), "--events-offset", String(cursor.events)];
    if (bounded) argv.push("--max-wait-ms", String(BOUNDED_FOLLOW.maxWaitMs), "--max-bytes", String(BOUNDED_FOLLOW.maxBytes));
    // The agent runs on another node (a Slurm job): its lock may not be visible here; its heartbeat is.
    if (ctx.machine.signalRun) argv.push("--liveness", "heartbeat");
    const handle = ctx.machine.transport.exec(argv, { signal: ctx.signal, captureStdout: false, tailBytes: 8192 });
    let buffered = "";
    let outcome: FollowOutcome | undefined;
    let paused = false;
    const onFrame = (raw: string): void => {
      if (raw === "" || outcome) return;
      failingSince = undefined;
      const frame = JSON.parse(raw) as { k: string; o?: number; l?: string; e?: Record<string, unknown>; message?: string };
      switch (frame.k) {
        case "log": {
          cursor = { ...cursor, log: frame.o ?? cursor.log };
          const line = frame.l ?? "";
          ctx.emit({ type: "log", line, offset: cursor.log }, cursor);
          const metric = parseMetric(line, ctx.metricPattern);
          if (metric) ctx.emit(metric, cursor);
          break;
        }
        case "ev": {
          cursor = { ...cursor, events: frame.o ?? cursor.events };
          const e = frame.e ?? {};
          if (e["type"] === "error") pendingError = { code: String(e["code"]), message: String(e["message"]), ...(typeof e["outputTail"] === "string" ? { outputTail: e["outputTail"] } : {}) };
          if (e["type"] === "exit") exit = e as unknown as AgentExit;
          const event = translateAgentEvent(e);
          if (event) ctx.emit(event, cursor);
          break;
        }
        case "end":
          if (!exit) throw new RunctlError("AGENT_FAILED", "The agent ended following without an exit record.");
          outcome = { kind: "end", exit, error: pendingError };
          break;
        case "lost":
          outcome = { kind: "lost", message: frame.message ?? "the agent is gone", error: pendingError };
          break;
        case "pause":
          if (bounded) paused = true;
          break;
        default:
          break; // heartbeats and future frame kinds
      }
    };
    for await (const chunk of handle) {
      if (chunk.stream !== "stdout") continue;
      buffered += Buffer.from(chunk.data).toString("utf8");
      let newline: number;
      while ((newline = buffered.indexOf("\n")) !== -1) {
        onFrame(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
      }
    }
    const result = await handle;
    onFrame(buffered);
    if (outcome) return outcome;
    if (paused && result.exitCode === 0) return "pause";
    throw new CommandError(
      { command: argv.join(" "), host: ctx.machine.address, exitCode: result.exitCode, signal: result.signal, durationMs: result.durationMs, stdoutTail: result.stdoutTail, stderrTail: result.stderrTail },
      { code: "AGENT_FAILED", message: `Following run folder ${ctx.runDir} on ${ctx.machine.address} failed (exit ${result.exitCode}): ${result.stderrTail.trim()}` },
    );
  };

  const lost = (): boolean => ctx.lostAfterMs !== undefined && failingSince !== undefined && Date.now() - failingSince >= ctx.lostAfterMs;
  try {
    return await pRetry(once, {
      minTimeout: 250,
      maxTimeout: 5000,
      factor: 2,
      signal: ctx.signal,
      retries: ctx.lostAfterMs === undefined ? 40 : Number.MAX_SAFE_INTEGER,
      shouldRetry: ({ error }) => isRunctlError(error) && error.retryable && !ctx.signal.aborted && !lost(),
      onFailedAttempt: ({ error, attemptNumber }) => {
        failingSince ??= Date.now();
        if (isRunctlError(error) && error.retryable && !lost()) ctx.onReconnect?.(error, attemptNumber);
      },
    });
  } catch (err) {
    if (ctx.signal.aborted) return { kind: "detached" };
    if (lost()) return { kind: "host-lost", message: (err as Error).message, error: pendingError };
    throw err;
  }
}

/** Agent events that become client events; others (errors, exits) are folded into the result. */
function translateAgentEvent(e: Record<string, unknown>): RunEventInput | undefined {
  switch (e["type"]) {
    case "phase": {
      const phase = e["phase"];
      if (phase === "setup" || phase === "data" || phase === "training" || phase === "teardown") return { type: "phase", phase };
      return undefined;
    }
    case "venv":
      return { type: "setup", venv: String(e["path"]), reused: e["reused"] === true, durationMs: Number(e["durationMs"] ?? 0) };
    case "checkpoint-restored":
      return { type: "resumed", name: String(e["name"]), step: numberOrNull(e["step"]), fromRunId: String(e["fromRunId"] ?? ""), path: String(e["path"]) };
    case "checkpoint":
      return {
        type: "checkpoint",
        name: String(e["name"]),
        step: numberOrNull(e["step"]),
        commitSeq: Number(e["commitSeq"] ?? 0),
        files: Number(e["files"] ?? 0),
        bytes: Number(e["bytes"] ?? 0),
        location: String(e["location"] ?? ""),
      };
    case "outputs":
      return { type: "outputs", files: Number(e["files"] ?? 0), bytes: Number(e["bytes"] ?? 0), location: String(e["location"] ?? "") };
    case "progress": {
      const phase = e["phase"];
      if (phase !== "data" && phase !== "checkpoint" && phase !== "output") return undefined;
      const progress = { type: "progress", phase, bytesDone: Number(e["bytesDone"] ?? 0), bytesTotal: Number(e["bytesTotal"] ?? 0) } as const;
      return typeof e["name"] === "string" ? { ...progress, name: e["name"] } : progress;
    }
    case "interruption":
      return { type: "interruption", reason: `spot ${String(e["action"] ?? "interruption")} notice for ${String(e["noticeTime"] ?? "now")}` };
    case "interruption-handled":
      return {
        type: "warning",
        code: "INTERRUPTION_HANDLED",
        message: `Interruption handled on the machine: trainer ${e["trainerExited"] === true ? "exited" : "was killed"}, final checkpoint ${String(e["checkpoint"] ?? "none")} in ${String(e["flushMs"])} ms.`,
      };
    case "rebalance-recommendation":
      return { type: "warning", code: "REBALANCE_RECOMMENDATION", message: "The machine got a rebalance recommendation (an interruption may follow)." };
    case "warning":
      // A checkpoint the trainer was still writing when it died (docs/checkpoints.md): never committed.
      if (typeof e["checkpoint"] === "string") return { type: "warning", code: "CHECKPOINT_NOT_COMMITTED", message: String(e["message"]) };
      return { type: "warning", message: String(e["message"]) };
    case "shutdown-scheduled":
      return { type: "warning", code: "SHUTDOWN_SCHEDULED", message: `The machine powers itself off in ${Math.round(Number(e["inMs"] ?? 0) / 1000)} s unless released first (${String(e["reason"])}).` };
    case "signal":
      return { type: "warning", code: "SIGNAL", message: `Sent ${String(e["signal"])} to the trainer (${String(e["reason"])}).` };
    default:
      return undefined;
  }
}

function numberOrNull(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/**
 * Parses a metric line: `RUNCTL_METRIC {json object}`, or the user's pattern (named groups; numeric
 * strings become numbers).
 */
export function parseMetric(line: string, pattern: RegExp | undefined): RunEventInput | undefined {
  let values: Record<string, unknown> | undefined;
  const marker = "RUNCTL_METRIC ";
  const at = line.indexOf(marker);
  if (at !== -1) {
    try {
      const parsed = JSON.parse(line.slice(at + marker.length)) as unknown;
      if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) values = parsed as Record<string, unknown>;
    } catch {
      values = undefined;
    }
  } else if (pattern) {
    const groups = pattern.exec(line)?.groups;
    if (groups) {
      values = Object.fromEntries(Object.entries(groups).map(([k, v]) => [k, v !== undefined && v.trim() !== "" && Number.isFinite(Number(v)) ? Number(v) : v]));
    }
  }
  if (!values) return undefined;
  const step = values["step"];
  return typeof step === "number" ? { type: "metric", values, step } : { type: "metric", values };
}
