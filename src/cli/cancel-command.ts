import { setTimeout as sleep } from "node:timers/promises";
import { Runctl } from "../index.js";
import type { CliCancelStrategy } from "./cli-args.js";
import { output, type CliIo } from "./cli-output.js";
import { formatDuration } from "../util/format-duration.js";
import { CliError, EXIT_CODES, type ExitCode } from "./cli-errors.js";
import { followEvents } from "./follow-events.js";
import { readRunJournal, type RunJournalView } from "./run-journals.js";
import { attachOptionsFor } from "./run-provider.js";

/**
 * Options of {@link cancelCommand}.
 *
 * @example
 * ```ts
 * const options: CancelCommandOptions = { runId: "20261121-152117-utfo5u", strategy: "kill", json: false };
 * ```
 */
export interface CancelCommandOptions {
  /** The run. */
  readonly runId: string;
  /** How to stop it. @defaultValue "interrupt" */
  readonly strategy: CliCancelStrategy;
  /** One JSON document. @defaultValue false */
  readonly json: boolean;
}

/**
 * `runctl cancel RUN`: attaches to the run, asks its agent to stop the trainer (`interrupt` or
 * `kill`), waits for the end and reports the final status (exit 0 when it ended canceled).
 *
 * @example
 * ```ts
 * const code = await cancelCommand({ runId, strategy: "interrupt", json: true }, io);
 * ```
 */
export async function cancelCommand(options: CancelCommandOptions, io: CliIo): Promise<ExitCode> {
  const o = output(io);
  const view = await waitForLaunch(options.runId, io.signal);
  if (view.exit) {
    const { exit } = view;
    if (options.json) o.json({ schemaVersion: 1, runId: options.runId, strategy: options.strategy, alreadyEnded: true, status: exit.status, exitCode: exit.exitCode, signal: exit.signal, durationMs: exit.durationMs });
    else o.out(`run ${options.runId} had already ended: ${exit.status}`);
    return EXIT_CODES.ok;
  }
  const run = Runctl.attach(options.runId, attachOptionsFor(view.record, (m) => o.err(`runctl: ${m}`)));
  await run.cancel({ strategy: options.strategy });
  if (!options.json) o.err(`runctl: ${options.strategy === "kill" ? "SIGKILL" : "SIGTERM"} sent to run ${options.runId}; waiting for it to end`);
  const end = await followEvents(run, io.signal, (event) => {
    if (event.type === "warning" && !options.json) o.err(`runctl: warning${event.code ? ` [${event.code}]` : ""}: ${event.message}`);
  });
  if (end.kind === "interrupted") {
    o.err(`runctl: stopped waiting; the ${options.strategy} request was delivered and run ${options.runId} is stopping`);
    return EXIT_CODES.interrupted;
  }
  const { result } = end;
  if (options.json) {
    o.json({
      schemaVersion: 1,
      runId: result.runId,
      strategy: options.strategy,
      alreadyEnded: false,
      status: result.status,
      exitCode: result.exitCode,
      signal: result.signal,
      durationMs: result.durationMs,
      checkpoints: result.checkpoints,
      ...(result.error ? { error: result.error } : {}),
    });
  } else {
    const how = [result.exitCode !== null ? `code ${result.exitCode}` : undefined, result.signal ?? undefined].filter((x) => x !== undefined).join(", ");
    const last = result.checkpoints[result.checkpoints.length - 1];
    o.out(`run ${result.runId} ${result.status}${how ? ` (${how})` : ""} after ${formatDuration(result.durationMs)}${last ? `; last checkpoint ${last.name}` : ""}`);
  }
  if (result.status === "canceled") return EXIT_CODES.ok;
  o.err(`runctl: run ${result.runId} ended ${result.status} before the cancel took effect${result.error ? `: ${result.error.message}` : ""}`);
  return EXIT_CODES.failed;
}

/** The run's journal once it has started on its machine (or ended): only then can its agent be signalled. */
async function waitForLaunch(runId: string, signal: AbortSignal | undefined): Promise<RunJournalView> {
  for (;;) {
    const view = readRunJournal(runId);
    if (view.exit || (view.record.runDir !== undefined && view.record.agentPath !== undefined)) return view;
    if (view.status !== "running") {
      throw new CliError("NOT_STARTED", `Run ${runId} never started on a machine and no client follows it; there is nothing to cancel.`);
    }
    try {
      await sleep(200, undefined, signal ? { signal } : {});
    } catch {
      throw new CliError("ABORTED", "Interrupted before the run started on its machine; nothing was sent.", EXIT_CODES.interrupted);
    }
  }
}
