#!/usr/bin/env node
/**
 * The `runctl` bin: {@link runCli} with the process's streams, Ctrl-C wired to its AbortSignal, and
 * the exit code set from its result. Nothing else lives here, so tests drive `runCli` in-process.
 *
 * @example
 * ```sh
 * runctl ls --json
 * ```
 */
import { EXIT_CODES, runCli } from "./run-cli.js";

const controller = new AbortController();
let interrupts = 0;
process.on("SIGINT", () => {
  // First Ctrl-C: stop the command (a followed run is detached, never stopped). Second: leave now.
  interrupts += 1;
  if (interrupts > 1) process.exit(EXIT_CODES.interrupted);
  controller.abort();
});
// `runctl logs RUN | head`: a closed pipe ends the command quietly.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw err;
});

const code = await runCli(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, signal: controller.signal });
process.exitCode = code;
// Exit once stdout is flushed: a detached follower may still hold timers that would keep us alive.
process.stdout.write("", () => process.exit(code));
