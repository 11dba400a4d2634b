/**
 * Quickstart: train on this machine, no cloud account.
 *
 * Syncs the sample project in training/, trains train.py (the template to copy) with
 * hyperparameters, shows progress from the event stream (`createEventPrinter`: transfers as progress
 * bars on a terminal), and prints the latest checkpoint after verifying it byte for byte.
 *
 *   npx tsx examples/quickstart.ts
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Runctl, createEventPrinter, local, localDir, type RunPlan, type HyperparamValue, type RunResult, type Checkpoint, type CheckpointVerification, type RunEvent } from "runctl";

const here = dirname(fileURLToPath(import.meta.url));

/** Knobs the tests turn; a user runs it with the defaults. */
export interface QuickstartOptions {
  /** Folder for committed checkpoints. @defaultValue ".runctl/checkpoints" */
  readonly checkpointDir?: string;
  /** The project folder to sync. @defaultValue the repository's training/ */
  readonly project?: string | undefined;
  /** The script to train, inside the project folder. @defaultValue "train.py" */
  readonly script?: string;
  /** Hyperparameters merged over the defaults. */
  readonly hyperparams?: Readonly<Record<string, HyperparamValue>>;
  /** Print progress. @defaultValue true */
  readonly verbose?: boolean;
  /** Called with every event (tests collect them). */
  readonly onEvent?: (event: RunEvent) => void;
}

/** What the quickstart returns. */
export interface QuickstartOutcome {
  readonly result: RunResult;
  readonly latest: Checkpoint | undefined;
  readonly verification: CheckpointVerification | undefined;
}

/** The script the quickstart trains, inside training/ (`runctl plan examples/quickstart.ts` shows it). */
export const script = "train.py";

/** The quickstart's plan: this machine, the sample project, checkpoints in a local folder. */
function quickstartPlan(checkpointDir: string, project = join(here, "..", "training")): RunPlan {
  return Runctl.instance(local())
    .sync(project)
    .checkpoints({ storage: localDir(checkpointDir), keep: 3 });
}

/** The plan with its default checkpoint folder, for `runctl plan examples/quickstart.ts` (a dry run). */
export const plan: RunPlan = quickstartPlan(".runctl/checkpoints");

export async function main(options: QuickstartOptions = {}): Promise<QuickstartOutcome> {
  // Progress of the sync and of each checkpoint commit: bars on a terminal, plain lines otherwise.
  const printer = createEventPrinter(process.stdout, { render, progress: options.verbose !== false });
  const say = options.verbose === false ? () => {} : (line: string) => printer.line(line);
  const run = quickstartPlan(options.checkpointDir ?? ".runctl/checkpoints", options.project)
    .train(options.script ?? script, {
      hyperparams: { lr: 0.5, steps: 60, "batch-size": 32, "checkpoint-every": 20, ...options.hyperparams },
    });

  say(`run ${run.runId}`);
  for await (const event of run) {
    options.onEvent?.(event);
    if (options.verbose !== false) printer.event(event);
  }
  printer.close();

  const result = await run;
  const latest = await run.checkpoints().latest();
  const verification = await latest?.verify();
  if (latest && verification) {
    say(`latest checkpoint: ${latest.name} (step ${latest.step}, ${latest.totalBytes} bytes, ${latest.manifest.files.length} files) — ${verification.ok ? "sha256 verified" : `CORRUPT: ${JSON.stringify(verification.problems)}`}`);
  } else {
    say("no checkpoint was committed");
  }
  return { result, latest, verification };
}

/** The quickstart's line for an event, or undefined to skip it (progress is drawn by the printer). */
function render(event: RunEvent): string | undefined {
  switch (event.type) {
    case "phase":
      return `• ${event.phase}`;
    case "sync":
      return `  synced ${event.files} files (${event.uploadedFiles} sent) in ${event.durationMs} ms`;
    case "metric":
      return event.step !== undefined && event.step % 10 === 0 ? `  step ${event.step}  loss ${fmt(event.values["loss"])}  acc ${fmt(event.values["accuracy"])}` : undefined;
    case "checkpoint":
      return `  checkpoint ${event.name} committed (${event.files} files, ${event.bytes} bytes)`;
    case "warning":
      return `  warning: ${event.message}`;
    case "exit":
      return `• exit: ${event.status}${event.exitCode !== null ? ` (code ${event.exitCode})` : ""}${event.error ? ` — ${event.error.message}` : ""}`;
    default:
      return undefined;
  }
}

function fmt(value: unknown): string {
  return typeof value === "number" ? value.toFixed(4) : String(value);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().then(
    ({ result, verification }) => process.exit(result.status === "succeeded" && verification?.ok ? 0 : 1),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
