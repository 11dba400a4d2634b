import { parseCliArgs, wantsJson, type ParsedCli } from "./cli-args.js";
import { EXIT_CODES, reportError, type ExitCode } from "./cli-errors.js";
import { helpText } from "./cli-help.js";
import { output, type CliIo } from "./cli-output.js";
import { cliVersion } from "./cli-version.js";

export type { CliIo, CliStream } from "./cli-output.js";
export type { SweepFn, SweepReport, SweepRequest, SweepResource } from "./sweep-report.js";
export { EXIT_CODES } from "./cli-errors.js";

/**
 * The whole CLI as a function: parses `argv` (without the node and script paths), runs the command
 * against `io` and resolves to the exit code. It never throws and never exits the process; errors
 * are printed as `runctl: <message> (<code>)` on stderr, or `{"schemaVersion":1,"error":{"code","message"}}` on stdout
 * with `--json`.
 *
 * @param io - Streams, stop signal and injectable services; see {@link CliIo}.
 * @returns 0 ok, 1 run or operation failed, 2 usage error, 3 run not found, 130 interrupted.
 * @example
 * ```ts
 * const code = await runCli(["logs", runId, "-f"], { stdout: process.stdout, stderr: process.stderr, signal });
 * ```
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<ExitCode> {
  const json = wantsJson(argv);
  try {
    return await dispatch(parseCliArgs(argv), io);
  } catch (err) {
    const { code, message, exitCode } = reportError(err, io.signal?.aborted === true);
    if (json) output(io).json({ schemaVersion: 1, error: { code, message } });
    else output(io).err(`runctl: ${message} (${code})`);
    if (code === "USAGE" && !json) output(io).err("Run `runctl --help` for usage.");
    return exitCode;
  }
}

// Each command loads with what it needs on first use (the SDK, the AWS SDK for a sweep), so that
// `--version`, `--help` and `ls` do not pay for the rest (bench/startup.ts).
async function dispatch(cli: ParsedCli, io: CliIo): Promise<ExitCode> {
  switch (cli.kind) {
    case "help":
      io.stdout.write(helpText(cli.command));
      return EXIT_CODES.ok;
    case "version":
      if (cli.json) output(io).json({ version: cliVersion() });
      else output(io).out(cliVersion());
      return EXIT_CODES.ok;
    case "quickstart":
      return (await import("./quickstart-command.js")).quickstartCommand(cli, io);
    case "ls":
      return (await import("./ls-command.js")).lsCommand(cli, io);
    case "logs":
      return (await import("./logs-command.js")).logsCommand(cli, io);
    case "attach":
      return (await import("./attach-command.js")).attachCommand(cli, io);
    case "checkpoints":
      return (await import("./checkpoints-command.js")).checkpointsCommand(cli, io);
    case "cancel":
      return (await import("./cancel-command.js")).cancelCommand(cli, io);
    case "sweep":
      return (await import("./sweep-command.js")).sweepCommand(cli, io);
    case "plan":
      return (await import("./plan-command.js")).planCommand(cli, io);
    case "doctor":
      return (await import("./doctor-command.js")).doctorCommand(cli, io);
  }
}
