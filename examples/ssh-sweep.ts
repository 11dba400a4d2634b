/**
 * A hyperparameter sweep over a pool of SSH machines: one base plan, one `.train()` per configuration,
 * all started at once. The pool gives each run a free host of its own and takes it back when the run
 * ends; runs beyond the pool's size wait for a host, then start.
 *
 *   RUNCTL_SSH_HOSTS=ml@10.0.0.5,ml@10.0.0.6,ml@10.0.0.7 RUNCTL_SSH_KEY=~/.ssh/id_ed25519 npx tsx examples/ssh-sweep.ts
 *
 * Checkpoints are committed on each run's host (configure S3 storage to keep them in one place) and
 * read back through SSH.
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Runctl, isRunctlError, sshHosts, type Checkpoint, type HyperparamValue, type RunEvent, type RunResult, type SshHost } from "runctl";
import { sshHostsFromEnv } from "./ssh-env.js";

const here = dirname(fileURLToPath(import.meta.url));

/** One configuration of the sweep. */
export type SweepConfig = Readonly<Record<string, HyperparamValue>>;

export interface SshSweepOptions {
  /** The pool. */
  readonly hosts: readonly SshHost[];
  /** One run per configuration, merged over the defaults. @defaultValue four learning rates */
  readonly sweep?: readonly SweepConfig[];
  /** Called with every event of every run (`index` is the configuration's position). */
  readonly onEvent?: (index: number, event: RunEvent) => void;
  /** Print progress. @defaultValue true */
  readonly verbose?: boolean;
}

/** What one configuration produced. */
export interface SweepOutcome {
  readonly config: SweepConfig;
  readonly result: RunResult;
  readonly latest: Checkpoint | undefined;
  /** The trainer's held-out accuracy (its `TEST_ACCURACY` line), if it got that far. */
  readonly testAccuracy: number | undefined;
}

export async function main(options: SshSweepOptions): Promise<SweepOutcome[]> {
  const say = options.verbose === false ? () => {} : (line: string) => console.log(line);
  const sweep = options.sweep ?? [{ lr: 0.05 }, { lr: 0.1 }, { lr: 0.2 }, { lr: 0.5 }];
  // Shared by every run; the trainer needs only the standard library, so no .setup().
  const base = Runctl.instance(sshHosts(options.hosts))
    .sync(join(here, "..", "test", "fixtures", "trainers"))
    .checkpoints({ keep: 2 });
  // Every run starts now; those beyond the pool's size wait inside for a free host.
  const runs = sweep.map((config) => base.train("train_mnist_e2e.py", { hyperparams: { steps: 40, "checkpoint-every": 10, ...config } }));
  return Promise.all(
    runs.map(async (run, index): Promise<SweepOutcome> => {
      const config = sweep[index]!;
      const label = JSON.stringify(config);
      let testAccuracy: number | undefined;
      for await (const event of run) {
        options.onEvent?.(index, event);
        if (event.type === "phase" && (event.phase === "syncing" || event.phase === "done")) say(`${label} ${run.runId}: ${event.phase}`);
        if (event.type === "log" && event.line.startsWith("TEST_ACCURACY ")) testAccuracy = Number(event.line.split(" ")[1]);
      }
      const result = await run;
      const latest = await run.checkpoints().latest();
      say(`${label} ${result.status} on ${result.machine?.address}: test accuracy ${testAccuracy ?? "?"}, latest checkpoint ${latest?.name ?? "none"}`);
      return { config, result, latest, testAccuracy };
    }),
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const hosts = sshHostsFromEnv("RUNCTL_SSH_HOSTS");
  if (hosts.length === 0) {
    console.error("set RUNCTL_SSH_HOSTS=user@host1,user@host2[:port],... (and RUNCTL_SSH_KEY, RUNCTL_SSH_KNOWN_HOSTS if needed)");
    process.exit(2);
  }
  main({ hosts }).then(
    (outcomes) => {
      const best = outcomes.filter((o) => o.testAccuracy !== undefined).sort((a, b) => b.testAccuracy! - a.testAccuracy!)[0];
      if (best) console.log(`best: ${JSON.stringify(best.config)} (run ${best.result.runId}, accuracy ${best.testAccuracy})`);
      process.exit(outcomes.every((o) => o.result.status === "succeeded") ? 0 : 1);
    },
    (err: unknown) => {
      console.error(isRunctlError(err) ? `${err.code}: ${err.message}` : err);
      process.exit(1);
    },
  );
}
