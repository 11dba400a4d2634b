/**
 * Inputs and limits: data fetched before training, a maximum duration enforced on the machine, and
 * the three ways to stop a run (interrupt, kill, detach) plus an AbortSignal.
 *
 *   npx tsx examples/controls.ts /path/to/dataset-folder
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Runctl, local, localDir, type CancelStrategy, type RunResult, type TrainingRun } from "runctl";

const here = dirname(fileURLToPath(import.meta.url));

function basePlan(checkpointDir: string) {
  return Runctl.instance(local())
    .sync(join(here, "..", "test", "fixtures", "trainers"))
    .checkpoints({ storage: localDir(checkpointDir) });
}

async function linesOf(run: TrainingRun): Promise<string[]> {
  const lines: string[] = [];
  for await (const event of run) if (event.type === "log") lines.push(event.line);
  return lines;
}

/** Trains on a dataset folder (train.csv, test.csv) copied into the workdir's data/ before training. */
export async function trainOnData(datasetDir: string, checkpointDir = ".runctl/checkpoints"): Promise<{ result: RunResult; lines: string[] }> {
  const run = basePlan(checkpointDir).data(resolve(datasetDir), { to: "data" }).train("train_mnist_e2e.py", { hyperparams: { steps: 20 } });
  const lines = await linesOf(run);
  return { result: await run, lines };
}

/** A run that would take ~30 s, stopped by `.budget({ maxDurationMs })` on the machine. */
export async function overBudget(maxDurationMs: number, checkpointDir = ".runctl/checkpoints"): Promise<{ result: RunResult; lines: string[] }> {
  const run = basePlan(checkpointDir).budget({ maxDurationMs }).train("train_mnist_e2e.py", { hyperparams: { steps: 300, "sleep-per-step": 0.1 }, graceMs: 5000 });
  const lines = await linesOf(run);
  return { result: await run, lines };
}

/** Starts a slow run and stops it with `strategy` once it reports step `atStep`. */
export async function stopAt(strategy: CancelStrategy, atStep: number, checkpointDir = ".runctl/checkpoints", steps = 300): Promise<{ run: TrainingRun; result: RunResult; lines: string[] }> {
  const run = basePlan(checkpointDir).train("train_mnist_e2e.py", { hyperparams: { steps, "sleep-per-step": 0.05, "checkpoint-every": 1000 } });
  const lines: string[] = [];
  for await (const event of run) {
    if (event.type === "log") lines.push(event.line);
    if (event.type === "metric" && event.step === atStep) void run.cancel({ strategy });
  }
  return { run, result: await run, lines };
}

/** Stops a run through an AbortSignal passed to `.train()` (default strategy: interrupt). */
export async function abortAfter(ms: number, checkpointDir = ".runctl/checkpoints"): Promise<{ result: RunResult; lines: string[] }> {
  const run = basePlan(checkpointDir).train("train_mnist_e2e.py", { hyperparams: { steps: 300, "sleep-per-step": 0.05 }, signal: AbortSignal.timeout(ms) });
  const lines = await linesOf(run);
  return { result: await run, lines };
}

export async function main(datasetDir: string): Promise<void> {
  const data = await trainOnData(datasetDir);
  console.log(`data: ${data.result.status}; ${data.lines.find((l) => l.startsWith("DATASET"))}`);
  const budget = await overBudget(2000);
  console.log(`budget: ${budget.result.status} (${budget.result.error?.code})`);
  for (const strategy of ["interrupt", "kill"] as const) {
    const { result } = await stopAt(strategy, 10);
    console.log(`${strategy}: ${result.status}, exit ${result.exitCode}, signal ${result.signal}`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const dir = process.argv[2];
  if (!dir) {
    console.error("usage: npx tsx examples/controls.ts <dataset-folder with train.csv>  (make one: python3 test/fixtures/trainers/train_mnist_e2e.py --export-dataset DIR)");
    process.exit(2);
  }
  main(dir).then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
