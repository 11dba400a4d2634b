import { Runctl, createEventPrinter } from "../index.js";
import { output, type CliIo } from "./cli-output.js";
import { EXIT_CODES, exitCodeForStatus, type ExitCode } from "./cli-errors.js";
import { followEvents } from "./follow-events.js";
import { readRunJournal } from "./run-journals.js";
import { attachOptionsFor } from "./run-provider.js";

/**
 * Options of {@link logsCommand}.
 *
 * @example
 * ```ts
 * const options: LogsCommandOptions = { runId: "20261121-152117-utfo5u", follow: true, json: false };
 * ```
 */
export interface LogsCommandOptions {
  /** The run. */
  readonly runId: string;
  /** Follow until the run ends. @defaultValue false */
  readonly follow: boolean;
  /** JSON: one document, or JSON lines of log events with `follow`. @defaultValue false */
  readonly json: boolean;
}

/**
 * `runctl logs RUN [-f]`: the run's output lines from its local journal; with `follow`, every line
 * so far and then live ones through `Runctl.attach`, until the run ends (exit code from its status).
 *
 * @example
 * ```ts
 * const code = await logsCommand({ runId, follow: true, json: false }, io);
 * ```
 */
export async function logsCommand(options: LogsCommandOptions, io: CliIo): Promise<ExitCode> {
  const o = output(io);
  const view = readRunJournal(options.runId);
  if (!options.follow) {
    const lines = view.events.flatMap((e) => (e.type === "log" ? [e.line] : []));
    if (options.json) o.json({ schemaVersion: 1, runId: options.runId, status: view.status, lines });
    else for (const line of lines) o.out(line);
    return EXIT_CODES.ok;
  }
  const run = Runctl.attach(options.runId, attachOptionsFor(view.record, (m) => o.err(`runctl: ${m}`)));
  // On a terminal, transfers show as progress bars among the lines (and warnings join them there, so
  // no stderr line lands inside a bar); piped, stdout stays the run's output lines only.
  const tty = !options.json && io.stdout.isTTY === true;
  const printer = createEventPrinter(io.stdout, { render: (event) => (event.type === "log" ? event.line : undefined), progress: tty });
  const end = await followEvents(run, io.signal, (event) => {
    if (event.type === "log") {
      if (options.json) o.json({ schemaVersion: 1, ...event });
      else printer.event(event);
    } else if (event.type === "progress") {
      printer.event(event);
    } else if (event.type === "warning") {
      const text = `runctl: warning${event.code ? ` [${event.code}]` : ""}: ${event.message}`;
      if (tty) printer.line(text);
      else o.err(text);
    }
  });
  printer.close();
  if (end.kind === "interrupted") {
    o.err(`runctl: stopped following run ${options.runId}; it goes on (runctl logs ${options.runId} -f to follow again)`);
    return EXIT_CODES.interrupted;
  }
  const { result } = end;
  o.err(`runctl: run ${result.runId} ${result.status}${result.exitCode !== null ? ` (code ${result.exitCode})` : ""}${result.error ? `: ${result.error.message}` : ""}`);
  return exitCodeForStatus(result.status);
}
