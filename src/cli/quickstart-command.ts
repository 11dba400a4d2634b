import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Runctl, local, localDir } from "../index.js";
import { CliError, EXIT_CODES, UsageError, type ExitCode } from "./cli-errors.js";
import type { CliIo } from "./cli-output.js";
import { quickstartPrinter, type QuickstartPrinter } from "./quickstart-printer.js";

/**
 * Options of {@link quickstartCommand}.
 *
 * @example
 * ```ts
 * const options: QuickstartCommandOptions = { dir: undefined, steps: 60, json: false };
 * ```
 */
export interface QuickstartCommandOptions {
  /** Folder for committed checkpoints, relative to the working directory. @defaultValue `.runctl/checkpoints` */
  readonly dir: string | undefined;
  /** Training steps. @defaultValue 60 */
  readonly steps: number | undefined;
  /** JSON lines, one an event, `schemaVersion: 1`. @defaultValue false */
  readonly json: boolean;
}

/** The template trainer's hyperparameters, as examples/quickstart.ts sets them. */
const HYPERPARAMS = { lr: 0.5, steps: 60, "batch-size": 32, "checkpoint-every": 20 } as const;
const SCRIPT = "train.py";

/**
 * `runctl quickstart`: trains the package's template trainer (training/train.py) on this machine,
 * checkpoints in a local folder (newest three kept), prints its progress, then verifies the latest
 * checkpoint byte for byte. Exit 0 when the run succeeded and its checkpoint verifies, 1 otherwise,
 * 130 on Ctrl-C, which cancels the run (SIGTERM: the trainer saves a last checkpoint, which is
 * committed and verified as usual): a demo left running in the background would surprise.
 *
 * @param printer - How progress is shown. @defaultValue {@link quickstartPrinter}
 * @example
 * ```ts
 * const code = await quickstartCommand({ dir: undefined, steps: 60, json: false }, io);
 * ```
 */
export async function quickstartCommand(options: QuickstartCommandOptions, io: CliIo, printer: QuickstartPrinter = quickstartPrinter(io, options.json)): Promise<ExitCode> {
  const project = trainingFolder();
  checkPython();
  const checkpointDir = resolve(io.cwd ?? process.cwd(), options.dir ?? join(".runctl", "checkpoints"));
  if (existsSync(checkpointDir) && !statSync(checkpointDir).isDirectory()) throw new UsageError(`quickstart: --dir ${checkpointDir} is a file, not a folder`);
  const run = Runctl.instance(local())
    .sync(project)
    .checkpoints({ storage: localDir(checkpointDir), keep: 3 })
    .train(SCRIPT, { hyperparams: { ...HYPERPARAMS, ...(options.steps !== undefined ? { steps: options.steps } : {}) } });
  // Ctrl-C cancels the run (interrupt) and still shows its end; a second Ctrl-C leaves at once (the bin).
  let interrupted = false;
  const onAbort = (): void => {
    interrupted = true;
    void run.cancel({ strategy: "interrupt" }).catch(() => {});
  };
  if (io.signal?.aborted) onAbort();
  else io.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    printer.printRun(run.runId, checkpointDir);
    for await (const event of run) printer.printEvent(event);
    const result = await run;
    const latest = await run.checkpoints().latest();
    const verification = await latest?.verify();
    printer.printResult({ runId: run.runId, status: result.status, latest, verification });
    if (interrupted) return EXIT_CODES.interrupted;
    return result.status === "succeeded" && verification?.ok === true ? EXIT_CODES.ok : EXIT_CODES.failed;
  } finally {
    io.signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * The package's training/ folder: found upwards from this file (dist/cli.js, a chunk under
 * dist/, or src/cli/ in the repository), at the package root named runctl.
 */
function trainingFolder(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg) && isRunctl(pkg) && existsSync(join(dir, "training", SCRIPT))) return join(dir, "training");
    const up = dirname(dir);
    if (up === dir) throw new CliError("NOT_FOUND", `runctl's template trainer (training/${SCRIPT}) is missing from the installed package near ${fileURLToPath(import.meta.url)}; reinstall runctl`);
    dir = up;
  }
}

function isRunctl(pkg: string): boolean {
  try {
    return (JSON.parse(readFileSync(pkg, "utf8")) as { name?: unknown }).name === "runctl";
  } catch {
    return false;
  }
}

/** The trainer and runctl's agent need python3 (3.8 or newer, standard library only) on PATH; checked before anything starts. */
function checkPython(): void {
  const probe = spawnSync("python3", ["-c", "import sys; sys.exit(0 if sys.version_info >= (3, 8) else 3)"], { encoding: "utf8", timeout: 30_000 });
  if (probe.error) {
    throw new CliError("PYTHON_NOT_FOUND", `quickstart needs python3 (3.8 or newer) on PATH to run the trainer, and it could not be run (${(probe.error as NodeJS.ErrnoException).code ?? probe.error.message}); install Python 3 (e.g. apt install python3, brew install python) and run again`);
  }
  if (probe.status === 3) throw new CliError("PYTHON_TOO_OLD", "quickstart needs python3 3.8 or newer; the python3 on PATH is older; install a newer Python 3 and run again");
  if (probe.status !== 0) throw new CliError("PYTHON_NOT_FOUND", `quickstart needs a working python3 on PATH; \`python3 -c ...\` exited ${probe.status ?? probe.signal}: ${probe.stderr.trim().slice(0, 200)}`);
}
