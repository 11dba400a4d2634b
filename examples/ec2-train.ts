/**
 * Train on an EC2 instance that runctl launches, watches and terminates: tagged at launch, host key
 * pinned, checkpoints committed to S3 by the instance, cost reported, budget enforced, and nothing
 * left behind (check with `runctl sweep --dry-run`).
 *
 *   AWS_REGION=us-east-1 RUNCTL_S3_URI=s3://my-bucket/runctl RUNCTL_EC2_PROFILE=runctl-training npx tsx examples/ec2-train.ts
 *   RUNCTL_EC2_SPOT=1 RUNCTL_EC2_TYPE=g5.xlarge ... npx tsx examples/ec2-train.ts --steps 200
 *
 * The instance reaches S3 with its instance profile (RUNCTL_EC2_PROFILE), so no credentials leave this
 * machine. Extra `--name value` arguments are hyperparameters. A t3.micro run takes about 5 minutes
 * and costs about $0.002 (plus S3 requests).
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Runctl, type BudgetOptions, type HyperparamValue, type Provider, type RunEvent, type RunResult, type Storage } from "runctl";
import { ec2, s3 } from "runctl/aws";

const here = dirname(fileURLToPath(import.meta.url));

export interface Ec2TrainOptions {
  /** The EC2 provider (or any provider: the same plan runs on SSH hosts and locally). */
  readonly provider: Provider;
  /** Where the instance commits checkpoints. */
  readonly storage: Storage;
  /** Hyperparameters merged over the defaults. */
  readonly hyperparams?: Readonly<Record<string, HyperparamValue>>;
  /** Money and time limits. @defaultValue `{ maxUsd: 1, maxDurationMs: 30 min }` */
  readonly budget?: BudgetOptions;
  /** How often `cost` events come. @defaultValue 60000 */
  readonly costIntervalMs?: number;
  /** Print progress. @defaultValue true */
  readonly verbose?: boolean;
}

export async function main(options: Ec2TrainOptions): Promise<{ runId: string; result: RunResult; events: RunEvent[] }> {
  const say = options.verbose === false ? () => {} : (line: string) => console.log(line);
  const plan = Runctl.instance(options.provider)
    .sync(join(here, "..", "test", "fixtures", "trainers"))
    .checkpoints({ storage: options.storage, keep: 2 })
    .budget(options.budget ?? { maxUsd: 1, maxDurationMs: 30 * 60_000 });
  const summary = await plan.plan("train_mnist_e2e.py");
  say(`plan: ${summary.resources.map((r) => r.kind).join(", ")}; ${summary.estimate.hourlyUsd === null ? "unknown" : `$${summary.estimate.hourlyUsd}`}/h (${summary.estimate.basis}), at most $${summary.estimate.maxTotalUsd?.toFixed(4) ?? "?"}`);
  const run = plan.train("train_mnist_e2e.py", {
    hyperparams: { lr: 0.5, steps: 40, "checkpoint-every": 10, ...options.hyperparams },
    ...(options.costIntervalMs !== undefined ? { costIntervalMs: options.costIntervalMs } : {}),
  });
  say(`run ${run.runId}`);
  const events: RunEvent[] = [];
  for await (const event of run) {
    events.push(event);
    if (event.type === "phase") say(`phase ${event.phase}`);
    if (event.type === "checkpoint") say(`checkpoint ${event.name} (step ${event.step}) -> ${event.location}`);
    if (event.type === "cost") say(`cost so far $${event.usd.toFixed(4)} at $${event.hourlyUsd}/h`);
    if (event.type === "warning") say(`warning: ${event.message}`);
  }
  const result = await run;
  say(`${result.status} (exit ${result.exitCode}) for $${result.cost.usd.toFixed(4)}; latest checkpoint: ${(await run.checkpoints().latest())?.name ?? "none"}`);
  return { runId: run.runId, result, events };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const uri = process.env["RUNCTL_S3_URI"];
  const region = process.env["AWS_REGION"] ?? process.env["AWS_DEFAULT_REGION"];
  if (!uri || !region) {
    console.error("set AWS_REGION and RUNCTL_S3_URI=s3://bucket/prefix (and RUNCTL_EC2_PROFILE: an instance profile that can write there)");
    process.exit(2);
  }
  const profile = process.env["RUNCTL_EC2_PROFILE"];
  const provider = ec2({
    region,
    instanceType: process.env["RUNCTL_EC2_TYPE"] ?? "t3.micro",
    spot: process.env["RUNCTL_EC2_SPOT"] === "1" ? { fallbackToOnDemand: true } : false,
    ...(profile ? { instanceProfile: profile } : {}),
  });
  const args = process.argv.slice(2);
  const hyperparams: Record<string, string> = {};
  for (let i = 0; i + 1 < args.length; i += 2) hyperparams[args[i]!.replace(/^--/, "")] = args[i + 1]!;
  // With an instance profile the instance uses its own credentials; none are forwarded.
  main({ provider, storage: s3(uri, { region, forwardCredentials: !profile }), hyperparams }).then(
    ({ result }) => process.exit(result.status === "succeeded" ? 0 : 1),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
