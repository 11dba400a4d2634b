/**
 * Survive losing the machine: a pool of hosts, checkpoints in S3, `.recover()`.
 *
 * When the machine gets a spot interruption notice (its agent polls the instance metadata service),
 * the trainer gets SIGTERM, saves, the final checkpoint is committed, and runctl restarts the run on
 * the next machine from that checkpoint, under the same run id. A machine that dies without notice
 * is noticed once it stays unreachable for `hostLostAfterMs`; the run resumes from the last
 * periodic checkpoint. A dropped connection alone never restarts a healthy run.
 *
 *   RUNCTL_SSH_HOSTS=ml@a,ml@b RUNCTL_S3_URI=s3://bucket/ckpt npx tsx examples/spot-recovery.ts
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Runctl, sshHosts, type HyperparamValue, type RecoverOptions, type RunEvent, type RunResult, type SshHost, type Storage } from "runctl";
import { s3 } from "runctl/aws";
import { sshHostsFromEnv } from "./ssh-env.js";

const here = dirname(fileURLToPath(import.meta.url));

export interface SpotRecoveryOptions {
  /** The pool. Give each host its `imdsEndpoint` to watch for interruption notices. */
  readonly hosts: readonly SshHost[];
  /** Checkpoint storage that outlives the machines. */
  readonly storage: Storage;
  /** Recovery settings. @defaultValue `{ maxRestarts: 3 }` */
  readonly recover?: RecoverOptions;
  /** Hyperparameters merged over the defaults. */
  readonly hyperparams?: Readonly<Record<string, HyperparamValue>>;
  /** Called with every event. */
  readonly onEvent?: (event: RunEvent) => void | Promise<void>;
  /** Print progress. @defaultValue true */
  readonly verbose?: boolean;
}

export async function main(options: SpotRecoveryOptions): Promise<{ runId: string; result: RunResult; lines: string[]; events: RunEvent[] }> {
  const say = options.verbose === false ? () => {} : (line: string) => console.log(line);
  const run = Runctl.instance(sshHosts(options.hosts))
    .sync(join(here, "..", "test", "fixtures", "trainers"))
    .checkpoints({ storage: options.storage, keep: 10 })
    .recover({ maxRestarts: 3, ...options.recover })
    .train("train_mnist_e2e.py", { hyperparams: { lr: 0.5, steps: 60, "checkpoint-every": 10, "sleep-per-step": 0.1, ...options.hyperparams } });
  const lines: string[] = [];
  const events: RunEvent[] = [];
  for await (const event of run) {
    events.push(event);
    if (event.type === "log") lines.push(event.line);
    if (event.type === "interruption") say(`interruption: ${event.reason}`);
    if (event.type === "recovered") say(`recovered (attempt ${event.attempt}) from ${event.fromCheckpoint ?? "the start"}`);
    if (event.type === "phase") say(`• ${event.phase}`);
    await options.onEvent?.(event);
  }
  const result = await run;
  say(`${result.status} after ${result.restarts} restart(s); steps lost: ${result.interruptions.map((i) => i.lostSteps).join(", ") || "none"}`);
  return { runId: run.runId, result, lines, events };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const hosts = sshHostsFromEnv("RUNCTL_SSH_HOSTS");
  const uri = process.env["RUNCTL_S3_URI"];
  if (hosts.length === 0 || !uri) {
    console.error("set RUNCTL_SSH_HOSTS=user@a,user@b and RUNCTL_S3_URI=s3://bucket/prefix (RUNCTL_S3_ENDPOINT for an S3-protocol server)");
    process.exit(2);
  }
  const endpoint = process.env["RUNCTL_S3_ENDPOINT"];
  main({ hosts, storage: s3(uri, endpoint ? { endpoint, forcePathStyle: true, checksums: "when_required" } : {}) }).then(
    ({ result }) => process.exit(result.status === "succeeded" ? 0 : 1),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
