/**
 * Your Slurm cluster: the run is one batch job, submitted through the login node over SSH.
 *
 * `slurm({ login })` syncs the project to the cluster's shared filesystem, asks Slurm whether it
 * accepts the job (an unknown partition or a bad gres fails here, before anything is synced), and
 * submits one `sbatch` job whose allocation is the run's gang (`.nodes(n)`). `srun` starts runctl's
 * agent on every node; logs, metrics and checkpoints flow back through the login node. While the job
 * waits in the queue the run is `queued` with Slurm's reason. With `.recover()` a job Slurm preempts
 * or requeues resumes from the newest verified checkpoint; `.budget({ maxDurationMs })` is the job's
 * `--time`, and Slurm's warning before it lets the trainer save its final checkpoint.
 *
 *   RUNCTL_SLURM_LOGIN=ml@login.cluster RUNCTL_SLURM_PARTITION=gpu npx tsx examples/slurm.ts
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Runctl, slurm, type Checkpoint, type CheckpointVerification, type HyperparamValue, type RecoverOptions, type RunEvent, type RunResult, type SetupOptions, type SlurmOptions, type SshHost, type Storage, type TrainingRun } from "runctl";
import { sshHostsFromEnv } from "./ssh-env.js";

const here = dirname(fileURLToPath(import.meta.url));

export interface SlurmExampleOptions {
  /** The cluster's login node. */
  readonly login: SshHost;
  /** More `slurm()` options (partition, account, qos, gresPerNode, timeLimit, sbatchArgs, workdir). */
  readonly cluster?: Omit<SlurmOptions, "login"> | undefined;
  /** Nodes in the job; more than one trains one DDP model with torchrun. @defaultValue 1 */
  readonly nodes?: number | undefined;
  /** The project to sync. @defaultValue the repository's training/ (the quickstart's) */
  readonly project?: string | undefined;
  /** The script, inside the project. @defaultValue "train.py" */
  readonly script?: string | undefined;
  /** Dependencies to install into a venv on the shared filesystem (shared by every node). */
  readonly setup?: SetupOptions | undefined;
  /** Hyperparameters merged over the defaults. */
  readonly hyperparams?: Readonly<Record<string, HyperparamValue>> | undefined;
  /** Checkpoint storage. @defaultValue runctl's folder on the cluster's shared filesystem */
  readonly storage?: Storage | undefined;
  /** Resume when Slurm preempts or requeues the job. @defaultValue no recovery */
  readonly recover?: RecoverOptions | undefined;
  /** The job's time limit (`--time`); Slurm warns the trainer before it. */
  readonly maxDurationMs?: number | undefined;
  /** Time the trainer gets after SIGTERM. @defaultValue 30000 */
  readonly graceMs?: number | undefined;
  /** Called with every event and the run (to cancel or detach it). */
  readonly onEvent?: ((event: RunEvent, run: TrainingRun) => void | Promise<void>) | undefined;
  /** Print progress. @defaultValue true */
  readonly verbose?: boolean | undefined;
}

export interface SlurmExampleOutcome {
  readonly runId: string;
  readonly result: RunResult;
  readonly events: readonly RunEvent[];
  /** Every log line with the node that printed it. */
  readonly lines: readonly { readonly node: number | undefined; readonly line: string }[];
  readonly latest: Checkpoint | undefined;
  readonly verification: CheckpointVerification | undefined;
}

export async function main(options: SlurmExampleOptions): Promise<SlurmExampleOutcome> {
  const say = options.verbose === false ? () => {} : (line: string) => console.log(line);
  const nodes = options.nodes ?? 1;
  let plan = Runctl.instance(slurm({ login: options.login, ...options.cluster }))
    .sync(options.project ?? join(here, "..", "training"))
    .checkpoints(options.storage ? { storage: options.storage, keep: 5 } : { keep: 5 });
  if (options.setup) plan = plan.setup(options.setup);
  if (nodes > 1) plan = plan.nodes(nodes);
  if (options.recover) plan = plan.recover(options.recover);
  if (options.maxDurationMs !== undefined) plan = plan.budget({ maxDurationMs: options.maxDurationMs });
  const run = plan.train(options.script ?? "train.py", {
    hyperparams: { steps: 60, "checkpoint-every": 20, ...options.hyperparams },
    ...(options.graceMs !== undefined ? { graceMs: options.graceMs } : {}),
  });
  say(`run ${run.runId}`);
  const events: RunEvent[] = [];
  const lines: { node: number | undefined; line: string }[] = [];
  for await (const event of run) {
    events.push(event);
    if (event.type === "log") lines.push({ node: event.node, line: event.line });
    if (event.type === "phase") say(`• ${event.phase}${event.job ? ` (job ${event.job}${event.reason ? `: ${event.reason}` : ""})` : ""}`);
    if (event.type === "log" && /^(FINAL_STEP|TRAINING_DONE|RESUMED_FROM_STEP|SIGTERM_CHECKPOINT|DDP_INFO)/.test(event.line)) say(`  [node ${event.node ?? 0}] ${event.line}`);
    if (event.type === "checkpoint") say(`  checkpoint ${event.name} committed`);
    if (event.type === "warning") say(`  warning: ${event.message}`);
    if (event.type === "recovered") say(`  resumed (attempt ${event.attempt}) from ${event.fromCheckpoint ?? "the start"}`);
    await options.onEvent?.(event, run);
  }
  const result = await run;
  say(`• exit: ${result.status}${result.error ? ` — ${result.error.code}: ${result.error.message}` : ""}`);
  const latest = await run.checkpoints().latest();
  const verification = await latest?.verify();
  return { runId: run.runId, result, events, lines, latest, verification };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const [login] = sshHostsFromEnv("RUNCTL_SLURM_LOGIN");
  if (!login) {
    console.error("set RUNCTL_SLURM_LOGIN=user@login-node (and RUNCTL_SLURM_PARTITION, RUNCTL_SLURM_NODES=2 for a DDP run)");
    process.exit(2);
  }
  const partition = process.env["RUNCTL_SLURM_PARTITION"];
  const nodes = Number(process.env["RUNCTL_SLURM_NODES"] ?? 1);
  main({ login, nodes, ...(partition ? { cluster: { partition } } : {}), ...(nodes > 1 ? { project: join(here, "..", "test", "fixtures", "trainers"), script: "train_ddp.py" } : {}) }).then(
    ({ result }) => process.exit(result.status === "succeeded" ? 0 : 1),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
