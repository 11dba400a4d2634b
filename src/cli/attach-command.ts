import { Runctl, createEventPrinter } from "../index.js";
import { output, type CliIo } from "./cli-output.js";
import { EXIT_CODES, exitCodeForStatus, type ExitCode } from "./cli-errors.js";
import { followEvents } from "./follow-events.js";
import { readRunJournal } from "./run-journals.js";
import { attachOptionsFor } from "./run-provider.js";

/**
 * `runctl attach RUN`: replays every event of the run, then follows it to the end; the exit code is
 * the run's (0 succeeded, 1 otherwise, 130 when Ctrl-C stopped following).
 *
 * @example
 * ```ts
 * const code = await attachCommand({ runId, json: true }, io); // JSON lines, exit event last
 * ```
 */
export async function attachCommand(options: { readonly runId: string; readonly json: boolean }, io: CliIo): Promise<ExitCode> {
  const o = output(io);
  const { record } = readRunJournal(options.runId);
  const run = Runctl.attach(options.runId, attachOptionsFor(record, (m) => o.err(`runctl: ${m}`)));
  if (!options.json) o.out(`run ${options.runId} (${record.provider}, ${record.script})`);
  // Progress: bars on a terminal, a line a second per transfer otherwise.
  const printer = createEventPrinter(io.stdout);
  const end = await followEvents(run, io.signal, (event) => (options.json ? o.json({ schemaVersion: 1, ...event }) : printer.event(event)));
  printer.close();
  if (end.kind === "interrupted") {
    o.err(`runctl: stopped following run ${options.runId}; it goes on (runctl attach ${options.runId} to follow again)`);
    return EXIT_CODES.interrupted;
  }
  return exitCodeForStatus(end.result.status);
}
