import { RunctlError, isRunctlError } from "../errors/runctl-error.js";
import type { Machine, Provider } from "../providers/types.js";
import type { ExitEvent, RunErrorInfo, RunEvent, RunEventInput, RunStatus } from "../run/events.js";
import type { FollowCursor, RunJournal } from "../run/journal.js";
import type { CommittedCheckpoint, RunInterruption, RunResult } from "../run/run-result.js";
import { CostMeter } from "../cost/cost-meter.js";
import { AsyncQueue } from "../util/async-queue.js";
import { relayAgentLog } from "./agent-log.js";
import { followRun, type FollowOutcome } from "./follow-run.js";
import { keepMachineAlive } from "./keep-alive.js";

/** Options of following a run. */
export interface FollowOptions {
  readonly metricPattern?: RegExp | undefined;
  readonly cleanup?: boolean | undefined;
  /** Give up (the machine is lost) after the connection has failed for this long. */
  readonly lostAfterMs?: number | undefined;
  /** Tag log, metric and warning events with this node rank (node 0 of a multi-node run). */
  readonly node?: number | undefined;
  /** Sees every event of the followed machine as it arrives (a gang reacts to one node's spot notice). */
  readonly onEvent?: ((event: RunEventInput) => void) | undefined;
}

/** Where a launched run lives, enough to follow and signal it. */
export interface LaunchedRun {
  readonly machine: Machine;
  readonly agentPath: string;
  /** The interpreter that runs the agent. */
  readonly agentPython: string;
  readonly runDir: string;
}

/**
 * The client side of one run, shared by `.train()` and `Runctl.attach()`: the journal, the live
 * event queue, following, signalling and the final result.
 */
export class RunSession {
  readonly checkpoints: CommittedCheckpoint[] = [];
  readonly followAbort = new AbortController();
  /** Set once the user canceled: an interruption after that is not recovered. */
  cancelRequested = false;
  /** Restarts on new machines so far. */
  restarts = 0;
  /** What the run's machines cost so far. */
  readonly meter = new CostMeter();
  /** Set when the client stopped the run for exceeding `.budget({ maxUsd })`. */
  budgetExceeded = false;
  private readonly interruptions: RunInterruption[] = [];
  private lastStep: number | null = null;
  private pendingRecovery: { readonly attempt: number; readonly reason: string; readonly atStep: number | null } | undefined;
  private finished = false;
  /** The last cost event seen (a reattached session knows only the journal's). */
  private lastCost: { usd: number; hourlyUsd: number } | undefined;

  constructor(
    readonly journal: RunJournal,
    readonly startedAt: number,
    /** The live stream; a takeover session keeps publishing into its predecessor's. */
    readonly events: AsyncQueue<RunEvent> = new AsyncQueue<RunEvent>(),
  ) {
    for (const event of journal.events) this.remember(event);
  }

  get runId(): string {
    return this.journal.runId;
  }

  get ended(): boolean {
    return this.finished;
  }

  /** Pushes already-journaled events (replay) into the live queue. */
  replay(): void {
    for (const event of this.journal.events) this.events.push(event);
  }

  /** Records and publishes one event. */
  emit(input: RunEventInput, cursor?: FollowCursor): RunEvent {
    const event = this.journal.append(input, cursor);
    this.remember(event);
    this.events.push(event);
    const pending = this.pendingRecovery;
    // The first sign of the new machine's trainer: the restored checkpoint, or training from scratch.
    if (pending && (event.type === "resumed" || (event.type === "phase" && event.phase === "training"))) {
      this.pendingRecovery = undefined;
      const resumedStep = event.type === "resumed" ? event.step : null;
      const lostSteps = pending.atStep === null ? null : Math.max(0, pending.atStep - (resumedStep ?? 0));
      this.interruptions.push({ reason: pending.reason, atStep: pending.atStep, resumedFromStep: resumedStep, lostSteps });
      this.emit({ type: "recovered", attempt: pending.attempt, fromCheckpoint: event.type === "resumed" ? event.name : null });
    }
    return event;
  }

  /**
   * Starts restart `attempt` after losing a machine: records why (a spot notice was already reported by
   * the agent) and resets the follow cursor, since the next machine's files start empty.
   */
  beginRestart(attempt: number, reason: string): void {
    if (reason !== "spot interruption") this.emit({ type: "interruption", reason });
    this.emit({ type: "phase", phase: "recovering" }, { log: 0, events: 0 });
    this.pendingRecovery = { attempt, reason, atStep: this.lastStep };
  }

  private remember(event: RunEvent): void {
    if (event.type === "metric" && event.step !== undefined) this.lastStep = event.step;
    if (event.type === "cost") this.lastCost = { usd: event.usd, hourlyUsd: event.hourlyUsd };
    if (event.type === "checkpoint") {
      this.checkpoints.push({ name: event.name, step: event.step, commitSeq: event.commitSeq, location: event.location });
    }
  }

  /** Asks the agent to stop the trainer (`interrupt`: SIGTERM then grace; `kill`: SIGKILL). */
  async signal(run: LaunchedRun, how: "interrupt" | "kill"): Promise<void> {
    // An agent on another machine than the transport reaches (a Slurm job's node): its provider signals it.
    if (run.machine.signalRun) return run.machine.signalRun(run.runDir, how);
    const result = await run.machine.transport.exec([run.agentPython, run.agentPath, "signal", run.runDir, how]);
    // Exit 3: the agent is no longer running (the run already ended); following reports the end.
    if (result.exitCode !== 0 && result.exitCode !== 3) {
      throw new RunctlError("AGENT_FAILED", `Could not ${how} run ${this.runId} on ${run.machine.address}: ${result.stderrTail.trim()}`);
    }
  }

  /** Follows a launched run to its end, then releases the machine and settles the result. */
  async followToEnd(run: LaunchedRun, provider: Provider, options: FollowOptions): Promise<RunResult> {
    return this.conclude(run, provider, await this.follow(run, options, provider), options);
  }

  /**
   * Follows a launched run until it ends (or is detached, or its machine is lost). Meanwhile
   * `provider`'s `keepAlive` renews the machine's lease, so a sweep never takes it.
   */
  follow(run: LaunchedRun, options: FollowOptions, provider?: Provider): Promise<FollowOutcome> {
    const stopKeepAlive = provider
      ? keepMachineAlive(provider, run.machine, (err) =>
          this.emit({ type: "warning", code: "KEEP_ALIVE_FAILED", message: `Could not renew ${run.machine.address}'s expiry (${err.message}); a sweep keeps it while its run looks alive, unless forced.` }),
        )
      : () => {};
    return followRun({
      machine: run.machine,
      agentPath: run.agentPath,
      agentPython: run.agentPython,
      runDir: run.runDir,
      start: this.journal.cursor,
      emit: (event, cursor) => {
        this.emit(options.node !== undefined && (event.type === "log" || event.type === "metric" || event.type === "warning" || event.type === "progress") ? { ...event, node: options.node } : event, cursor);
        options.onEvent?.(event);
      },
      metricPattern: options.metricPattern,
      signal: this.followAbort.signal,
      lostAfterMs: options.lostAfterMs,
      onReconnect: (error, attempt) =>
        this.emit({ type: "warning", code: "RECONNECTING", message: `Lost the connection to ${run.machine.address} (${error.message}); reconnecting (attempt ${attempt}). The run goes on.` }),
    }).finally(stopKeepAlive);
  }

  /** Cleans up, releases the machine and settles the result of a followed run. */
  async conclude(run: LaunchedRun, provider: Provider, outcome: FollowOutcome, options: FollowOptions, statusOverride?: RunStatus, label?: string): Promise<RunResult> {
    if (outcome.kind === "detached") return this.detach(run.machine);
    await relayAgentLog(run.machine, run.runDir, provider.logger);
    if (options.cleanup && outcome.kind === "end") await this.removeRunDir(run);
    // Before the machine goes back (an SSH pool would hand it and its GPU to the next run): a dead
    // agent's trainer must not run on unsupervised.
    if (outcome.kind === "lost") await this.reapOrphans(run);
    await this.release(run, provider);
    if (outcome.kind === "lost") {
      return this.finish(statusOverride ?? "failed", null, null, { code: "AGENT_FAILED", message: `${label ? `${label}: ` : ""}The agent on ${run.machine.address} stopped without recording an exit: ${outcome.message}`, ...tailOf(outcome.error) }, run.machine);
    }
    if (outcome.kind === "host-lost") {
      return this.finish(statusOverride ?? "failed", null, null, { code: "HOST_UNREACHABLE", message: `${label ? `${label}: ` : ""}Lost ${run.machine.address}: ${outcome.message}` }, run.machine);
    }
    const { exit, error } = outcome;
    // A run the client stopped for its budget ends failed, not canceled.
    const status: RunStatus = statusOverride ?? (this.budgetExceeded && exit.status === "canceled" ? "failed" : exit.status);
    let info: RunErrorInfo | undefined;
    if (status === "failed") {
      if (error) info = { code: error.code, message: error.message, ...tailOf(error) };
      else if (exit.reason === "max-duration") info = { code: "MAX_DURATION_EXCEEDED", message: `The run exceeded its maximum duration and was stopped.` };
      else if (exit.reason === "budget" || this.budgetExceeded) info = { code: "BUDGET_EXCEEDED", message: `The run reached its budget ($${this.cost().usd.toFixed(2)} spent) and was stopped.` };
      else info = { code: "TRAINING_FAILED", message: exit.exitCode !== null ? `The trainer exited with code ${exit.exitCode}.` : `The trainer was killed by ${exit.signal ?? "a signal"}.` };
    }
    // In a gang the message says which node decided the run.
    if (info && label) info = { ...info, message: `${label}: ${info.message}` };
    return this.finish(status, exit.exitCode, exit.signal, info, run.machine);
  }

  /** Deletes the run's folder on its machine (`cleanup: true`); a failure is a warning. */
  async removeRunDir(run: LaunchedRun): Promise<void> {
    const removed = await Promise.resolve(run.machine.transport.exec(["rm", "-rf", "--", run.runDir])).catch((err: unknown) => ({ exitCode: null, stderrTail: (err as Error).message }));
    if (removed.exitCode !== 0) this.emit({ type: "warning", code: "CLEANUP_FAILED", message: `Could not remove ${run.runDir} on ${run.machine.address}: ${removed.stderrTail.trim()}` });
  }

  /**
   * Ends what is left of a run whose agent died (AGENT_FAILED): the agent's `reap` kills the
   * trainer's process group recorded in the run folder (`supervision.json`), only while it is still
   * this run's (the leader's start time, or a member carrying the run's token), and every process
   * carrying the token. A no-op while an agent is alive. A failure is a warning.
   */
  async reapOrphans(run: LaunchedRun): Promise<void> {
    // Pids recorded by an agent on another machine mean nothing here (its scheduler ends its processes).
    if (run.machine.signalRun) return;
    try {
      const result = await run.machine.transport.exec([run.agentPython, run.agentPath, "reap", run.runDir]);
      if (result.exitCode !== 0) throw new Error(`exit ${result.exitCode}: ${result.stderrTail.trim()}`);
    } catch (err) {
      this.emit({ type: "warning", code: "REAP_FAILED", message: `Could not end the processes of run ${this.runId} left on ${run.machine.address}: ${(err as Error).message}` });
    }
  }

  /** Gives the machine back to its provider; a failure is a warning. The meter stops either way. */
  async release(run: LaunchedRun, provider: Provider): Promise<void> {
    await provider.release(run.machine).catch((err: unknown) => {
      this.emit({ type: "warning", code: "RELEASE_FAILED", message: `Could not release ${run.machine.address}: ${(err as Error).message}` });
    });
    this.meter.stop(run.machine.id);
  }

  /** Cost so far: the meter when this session ran the machines, else the journal's last report. */
  cost(): { usd: number; hourlyUsd: number } {
    if (this.meter.priced || !this.lastCost) return { usd: this.meter.usd(), hourlyUsd: this.meter.hourlyUsd() || (this.lastCost?.hourlyUsd ?? 0) };
    return this.lastCost;
  }

  /** Emits a `cost` event with the accrued cost (only for machines that have a price). */
  emitCost(): void {
    if (!this.meter.priced) return;
    const { usd, hourlyUsd } = this.cost();
    this.emit({ type: "cost", usd: Math.round(usd * 1e6) / 1e6, hourlyUsd });
  }

  /** Stops following; the run goes on and can be reattached. Nothing is released. */
  detach(machine: Machine | undefined): RunResult {
    this.finished = true;
    this.journal.releaseWriter();
    this.events.end();
    return this.result("detached", null, null, undefined, machine);
  }

  /** Records the exit event, ends the stream and returns the result. */
  finish(status: RunStatus, exitCode: number | null, signal: string | null, error: RunErrorInfo | undefined, machine: Machine | undefined): RunResult {
    if (machine) this.meter.stop(machine.id);
    this.emitCost();
    const result = this.result(status, exitCode, signal, error, machine);
    this.emit({ type: "phase", phase: "done" });
    const exit: Omit<ExitEvent, "seq" | "time" | "runId"> = {
      type: "exit",
      status,
      exitCode,
      signal,
      durationMs: result.durationMs,
      ...(error ? { error } : {}),
      ...(result.restarts > 0 ? { restarts: result.restarts, interruptions: result.interruptions } : {}),
    };
    this.emit(exit);
    this.finished = true;
    this.journal.releaseWriter();
    this.events.end();
    return result;
  }

  /** Ends the run with an error that stopped it before or while following. */
  fail(err: unknown): never {
    const error = isRunctlError(err) ? err : new RunctlError("AGENT_FAILED", (err as Error)?.message ?? String(err), { cause: err });
    if (!this.finished) {
      this.emit({ type: "exit", status: "failed", exitCode: null, signal: null, durationMs: Date.now() - this.startedAt, error: { code: error.code, message: error.message } });
      this.finished = true;
      this.journal.releaseWriter();
      this.events.end(error);
    }
    throw error;
  }

  private result(status: RunStatus, exitCode: number | null, signal: string | null, error: RunErrorInfo | undefined, machine: Machine | undefined): RunResult {
    return {
      runId: this.runId,
      status,
      exitCode,
      signal,
      durationMs: Date.now() - this.startedAt,
      checkpoints: [...this.checkpoints],
      restarts: this.restarts,
      interruptions: [...this.interruptions],
      cost: this.cost(),
      ...(error ? { error } : {}),
      ...(machine ? { machine: { provider: machine.provider, id: machine.id, address: machine.address } } : {}),
    };
  }
}

function tailOf(error: { outputTail?: string | undefined } | undefined): { outputTail?: string | undefined } {
  return error?.outputTail !== undefined ? { outputTail: error.outputTail } : {};
}
