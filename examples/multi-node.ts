/**
 * Multi-node training: one DDP model across several machines, with PyTorch's own launcher.
 *
 * `.nodes(n)` takes n machines from the pool as one gang and starts `torchrun --nnodes n
 * --node_rank r --master_addr <node 0> …` on each, so a plain DDP script runs unchanged. Every
 * node's log lines arrive tagged with its rank; checkpoints are committed from node 0. If any node
 * fails, is lost, or gets a spot notice, the whole gang stops (node 0 saves) and, with `.recover()`,
 * is restarted on live machines from the newest verified checkpoint.
 *
 *   RUNCTL_SSH_HOSTS=ml@a,ml@b,ml@c RUNCTL_S3_URI=s3://bucket/ckpt npx tsx examples/multi-node.ts
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Runctl, sshHosts, type Checkpoint, type CheckpointVerification, type HyperparamValue, type RecoverOptions, type RunEvent, type RunResult, type SshHost, type Storage } from "runctl";
import { s3 } from "runctl/aws";
import { sshHostsFromEnv } from "./ssh-env.js";

const here = dirname(fileURLToPath(import.meta.url));

export interface MultiNodeOptions {
  /** The pool the gang is drawn from (at least `nodes` hosts; one more lets a lost node be replaced). */
  readonly hosts: readonly SshHost[];
  /** Machines in the gang. @defaultValue 2 */
  readonly nodes?: number | undefined;
  /** Checkpoint storage every node reaches (needed with `recover`). @defaultValue node 0's own folder */
  readonly storage?: Storage | undefined;
  /** Restart the gang after a lost node or a spot notice. @defaultValue no recovery */
  readonly recover?: RecoverOptions | undefined;
  /** Hyperparameters merged over the defaults. */
  readonly hyperparams?: Readonly<Record<string, HyperparamValue>> | undefined;
  /** Time a node's trainer gets after SIGTERM before SIGKILL (a torchrun whose peer died ignores SIGTERM). @defaultValue 30000 */
  readonly graceMs?: number | undefined;
  /** Called with every event. */
  readonly onEvent?: ((event: RunEvent) => void | Promise<void>) | undefined;
  /** Print progress. @defaultValue true */
  readonly verbose?: boolean | undefined;
}

export interface MultiNodeOutcome {
  readonly runId: string;
  readonly result: RunResult;
  /** Every log line with the node that printed it. */
  readonly lines: readonly { readonly node: number | undefined; readonly line: string }[];
  readonly events: readonly RunEvent[];
  readonly latest: Checkpoint | undefined;
  readonly verification: CheckpointVerification | undefined;
}

export async function main(options: MultiNodeOptions): Promise<MultiNodeOutcome> {
  const say = options.verbose === false ? () => {} : (line: string) => console.log(line);
  let plan = Runctl.instance(sshHosts(options.hosts))
    .sync(join(here, "..", "test", "fixtures", "trainers"))
    .checkpoints(options.storage ? { storage: options.storage, keep: 5 } : { keep: 5 })
    .nodes(options.nodes ?? 2);
  if (options.recover) plan = plan.recover(options.recover);
  const run = plan.train("train_ddp.py", {
    hyperparams: { steps: 60, "checkpoint-every": 10, ...options.hyperparams },
    ...(options.graceMs !== undefined ? { graceMs: options.graceMs } : {}),
  });
  say(`run ${run.runId}`);
  const lines: { node: number | undefined; line: string }[] = [];
  const events: RunEvent[] = [];
  for await (const event of run) {
    events.push(event);
    if (event.type === "log") lines.push({ node: event.node, line: event.line });
    if (event.type === "phase") say(`• ${event.phase}`);
    if (event.type === "log" && /^(FINAL_STEP|DDP_INFO|RESUMED_FROM_STEP)/.test(event.line)) say(`  [node ${event.node ?? 0}] ${event.line}`);
    if (event.type === "checkpoint") say(`  checkpoint ${event.name} committed`);
    if (event.type === "warning") say(`  warning${event.node !== undefined ? ` [node ${event.node}]` : ""}: ${event.message}`);
    if (event.type === "recovered") say(`  gang restarted (attempt ${event.attempt}) from ${event.fromCheckpoint ?? "the start"}`);
    await options.onEvent?.(event);
  }
  const result = await run;
  say(`• exit: ${result.status}${result.error ? ` — ${result.error.code}: ${result.error.message}` : ""}`);
  const latest = await run.checkpoints().latest();
  const verification = await latest?.verify();
  return { runId: run.runId, result, lines, events, latest, verification };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const hosts = sshHostsFromEnv("RUNCTL_SSH_HOSTS");
  const uri = process.env["RUNCTL_S3_URI"];
  if (hosts.length < 2) {
    console.error("set RUNCTL_SSH_HOSTS=user@a,user@b[,user@c] (and RUNCTL_S3_URI=s3://bucket/prefix to recover from a lost node)");
    process.exit(2);
  }
  main({ hosts, storage: uri ? s3(uri) : undefined, recover: uri ? { maxRestarts: 2, hostLostAfterMs: 30_000 } : undefined }).then(
    ({ result }) => process.exit(result.status === "succeeded" ? 0 : 1),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
