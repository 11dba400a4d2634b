/**
 * Interrupt a run, then resume a new run from its latest verified checkpoint.
 *
 * The first run is interrupted (SIGTERM: the trainer saves a checkpoint and exits, the agent commits
 * it). The second run restores that checkpoint before training (RUNCTL_RESUME_FROM) and continues
 * from the next step. The trainer is deterministic, so the final weights equal an uninterrupted run's.
 *
 *   npx tsx examples/resume.ts
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Runctl, local, localDir, type RunEvent, type RunResult, type TrainingRun } from "runctl";

const here = dirname(fileURLToPath(import.meta.url));

export interface ResumeOptions {
  /** Folder for committed checkpoints. @defaultValue ".runctl/checkpoints" */
  readonly checkpointDir?: string;
  /** Total steps. @defaultValue 80 */
  readonly steps?: number;
  /** Interrupt the first run once it has reported this step. @defaultValue 30 */
  readonly interruptAtStep?: number;
  /** Print progress. @defaultValue true */
  readonly verbose?: boolean;
}

export interface ResumeOutcome {
  readonly first: RunResult;
  readonly second: RunResult;
  /** Log lines of each run. */
  readonly firstLog: readonly string[];
  readonly secondLog: readonly string[];
}

export async function main(options: ResumeOptions = {}): Promise<ResumeOutcome> {
  const say = options.verbose === false ? () => {} : (line: string) => console.log(line);
  const steps = options.steps ?? 80;
  const interruptAt = options.interruptAtStep ?? 30;
  const base = Runctl.instance(local())
    .sync(join(here, "..", "test", "fixtures", "trainers"))
    .checkpoints({ storage: localDir(options.checkpointDir ?? ".runctl/checkpoints"), keep: 5 });
  // Slow steps down a little so the interruption lands mid-run.
  const hyperparams = { lr: 0.5, steps, "checkpoint-every": 10, "sleep-per-step": 0.02 };

  const first = base.train("train_mnist_e2e.py", { hyperparams });
  say(`first run ${first.runId}: interrupting at step ${interruptAt}`);
  const firstLog = await collect(first, async (event) => {
    if (event.type === "metric" && event.step === interruptAt) await first.cancel({ strategy: "interrupt" });
  });
  const firstResult = await first;
  say(`first run: ${firstResult.status}, last checkpoint ${firstResult.checkpoints.at(-1)?.name ?? "none"}`);

  const second = base.resumeFrom(first.runId).train("train_mnist_e2e.py", { hyperparams });
  say(`second run ${second.runId}: resuming from ${first.runId}`);
  const secondLog = await collect(second, async (event) => {
    if (event.type === "resumed") say(`restored ${event.name} (step ${event.step})`);
  });
  const secondResult = await second;
  say(`second run: ${secondResult.status}; ${secondLog.filter((l) => /^(RESUMED_FROM_STEP|START_STEP|FINAL_STEP)/.test(l)).join(" | ")}`);
  return { first: firstResult, second: secondResult, firstLog, secondLog };
}

async function collect(run: TrainingRun, onEvent: (event: RunEvent) => Promise<void>): Promise<string[]> {
  const lines: string[] = [];
  for await (const event of run) {
    if (event.type === "log") lines.push(event.line);
    await onEvent(event);
  }
  return lines;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().then(
    ({ second }) => process.exit(second.status === "succeeded" ? 0 : 1),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
