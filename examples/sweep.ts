/**
 * A hyperparameter sweep: one base plan, several `.train()` calls running in parallel on this
 * machine, the best run picked by its final metrics.
 *
 *   npx tsx examples/sweep.ts
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Runctl, local, localDir, type RunResult } from "runctl";

const here = dirname(fileURLToPath(import.meta.url));

export interface SweepTrial {
  readonly lr: number;
  readonly result: RunResult;
  /** The last metric values the run reported. */
  readonly final: Readonly<Record<string, unknown>> | undefined;
}

export async function main(options: { readonly lrs?: readonly number[]; readonly checkpointDir?: string } = {}): Promise<{ trials: SweepTrial[]; best: SweepTrial | undefined }> {
  const base = Runctl.instance(local())
    .sync(join(here, "..", "test", "fixtures", "trainers"))
    .checkpoints({ storage: localDir(options.checkpointDir ?? ".runctl/checkpoints"), keep: 1 });

  const trials = await Promise.all(
    (options.lrs ?? [0.05, 0.5, 2.0]).map(async (lr): Promise<SweepTrial> => {
      const run = base.train("train_mnist_e2e.py", { hyperparams: { lr, steps: 80, "checkpoint-every": 40 } });
      let final: Readonly<Record<string, unknown>> | undefined;
      for await (const event of run) if (event.type === "metric") final = event.values;
      return { lr, result: await run, final };
    }),
  );
  const succeeded = trials.filter((t) => t.result.status === "succeeded" && typeof t.final?.["loss"] === "number");
  const best = succeeded.sort((a, b) => (a.final!["loss"] as number) - (b.final!["loss"] as number))[0];
  for (const t of trials) console.log(`lr ${t.lr}: ${t.result.status}, final loss ${String(t.final?.["loss"])} (run ${t.result.runId})`);
  console.log(`best: lr ${best?.lr}`);
  return { trials, best };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().then(
    ({ best }) => process.exit(best ? 0 : 1),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
