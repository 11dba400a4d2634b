/**
 * Checkpoints, data and outputs in S3 (or any S3-protocol store), written by the machine itself, so
 * a run keeps saving when the client is gone, and a run on another machine resumes from them.
 *
 *   RUNCTL_S3_URI=s3://my-bucket/runctl npx tsx examples/s3-checkpoints.ts
 *   RUNCTL_S3_URI=s3://bucket/x RUNCTL_S3_ENDPOINT=http://10.0.0.2:9000 RUNCTL_SSH_HOST=ml@10.0.0.5 npx tsx examples/s3-checkpoints.ts --steps 200
 *
 * Extra `--name value` arguments are hyperparameters for the trainer.
 *
 * The machine commits each finished checkpoint (files, then manifest.json, then LATEST) with boto3 or
 * the aws CLI, whichever it has; credentials are handed over in memory, never written there.
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Runctl, local, sshHosts, type HyperparamValue, type Provider, type ResumeSource, type RunEvent, type RunResult, type Storage } from "runctl";
import { s3 } from "runctl/s3"; // S3 storage alone: loads the S3 client, not EC2's or SSM's
import { sshHostsFromEnv } from "./ssh-env.js";

const here = dirname(fileURLToPath(import.meta.url));

export interface S3CheckpointsOptions {
  /** Where the run happens. @defaultValue `local()` */
  readonly provider?: Provider;
  /** Checkpoint storage, e.g. `s3("s3://bucket/ckpt", { endpoint })`. */
  readonly storage: Storage;
  /** Input data, downloaded by the machine into `data/` (`RUNCTL_DATA_DIR`). */
  readonly data?: Storage;
  /** Where the output folder is uploaded at the end. */
  readonly outputs?: Storage;
  /** Resume from another run's checkpoints in the same storage. */
  readonly resumeFrom?: ResumeSource;
  /** Hyperparameters merged over the defaults. */
  readonly hyperparams?: Readonly<Record<string, HyperparamValue>>;
  /** Called with every event; may cancel the run through `cancel`. */
  readonly onEvent?: (event: RunEvent, cancel: () => Promise<void>) => void | Promise<void>;
  /** Print progress. @defaultValue true */
  readonly verbose?: boolean;
}

export async function main(options: S3CheckpointsOptions): Promise<{ runId: string; result: RunResult; lines: string[] }> {
  const say = options.verbose === false ? () => {} : (line: string) => console.log(line);
  let plan = Runctl.instance(options.provider ?? local())
    .sync(join(here, "..", "test", "fixtures", "trainers"))
    .checkpoints({ storage: options.storage, keep: 3 });
  if (options.data) plan = plan.data(options.data, { to: "data" });
  if (options.outputs) plan = plan.outputs(options.outputs);
  if (options.resumeFrom !== undefined) plan = plan.resumeFrom(options.resumeFrom);
  const run = plan.train("train_mnist_e2e.py", { hyperparams: { lr: 0.5, steps: 60, "checkpoint-every": 10, ...options.hyperparams } });
  say(`run ${run.runId}`);
  const lines: string[] = [];
  for await (const event of run) {
    if (event.type === "log") lines.push(event.line);
    if (event.type === "checkpoint") say(`checkpoint ${event.name} -> ${event.location}`);
    if (event.type === "resumed") say(`resumed from ${event.fromRunId}/${event.name} (step ${event.step})`);
    if (event.type === "outputs") say(`outputs: ${event.files} files -> ${event.location}`);
    if (event.type === "warning") say(`warning: ${event.message}`);
    await options.onEvent?.(event, () => run.cancel({ strategy: "interrupt" }));
  }
  const result = await run;
  say(`${result.status}; latest checkpoint: ${(await run.checkpoints().latest())?.name ?? "none"}`);
  return { runId: run.runId, result, lines };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const uri = process.env["RUNCTL_S3_URI"];
  if (!uri) {
    console.error("set RUNCTL_S3_URI=s3://bucket/prefix (RUNCTL_S3_ENDPOINT for an S3-protocol server; RUNCTL_SSH_HOST to run on an SSH host)");
    process.exit(2);
  }
  const endpoint = process.env["RUNCTL_S3_ENDPOINT"];
  const storage = s3(uri, endpoint ? { endpoint, forcePathStyle: true, checksums: "when_required" } : {});
  const hosts = sshHostsFromEnv();
  const args = process.argv.slice(2);
  const hyperparams: Record<string, string> = {};
  for (let i = 0; i + 1 < args.length; i += 2) hyperparams[args[i]!.replace(/^--/, "")] = args[i + 1]!;
  main({ storage, hyperparams, ...(hosts.length > 0 ? { provider: sshHosts(hosts) } : {}) }).then(
    ({ result }) => process.exit(result.status === "succeeded" ? 0 : 1),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
