/**
 * Train inside a container image, on this machine or on an SSH host.
 *
 * The agent stays on the machine, supervising; setup and the trainer run in the image with
 * `docker run --init` (so SIGTERM reaches the trainer), the synced code at /runctl/code and the
 * checkpoint, data and output folders at /runctl/checkpoints, /runctl/data and /runctl/outputs.
 * Checkpoints are committed from the mounted folder by the agent, with the same integrity rules as
 * without a container. `gpus: "auto"` gives the container every NVIDIA GPU when the machine has
 * them; `mounts` add folders of the machine, such as an EBS volume `mountVolume()` mounted.
 *
 *   npx tsx examples/container.ts                                       # this machine, python:3.12-slim
 *   RUNCTL_SSH_HOSTS=ml@gpu-box RUNCTL_IMAGE=pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime npx tsx examples/container.ts
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import {
  Runctl,
  local,
  localDir,
  sshHosts,
  type Checkpoint,
  type CheckpointVerification,
  type ContainerOptions,
  type HyperparamValue,
  type Provider,
  type RecoverOptions,
  type RunEvent,
  type RunResult,
  type Storage,
} from "runctl";
import { sshHostsFromEnv } from "./ssh-env.js";

const here = dirname(fileURLToPath(import.meta.url));

/** Knobs the tests turn; a user runs it with the defaults or the environment variables above. */
export interface ContainerExampleOptions {
  /** Where to train. @defaultValue `local()` */
  readonly provider?: Provider | undefined;
  /** The image. @defaultValue `"python:3.12-slim"` */
  readonly image?: string | undefined;
  /** `.container()` options (mounts, gpus, shmSize, network, env, runtime, pull, host, user). */
  readonly container?: ContainerOptions | undefined;
  /** Where checkpoints are committed. @defaultValue `localDir(".runctl/checkpoints")` on this machine, the host's own folder on an SSH host */
  readonly storage?: Storage | undefined;
  /** The project folder to sync. @defaultValue the repository's training/ */
  readonly project?: string | undefined;
  /** The script to train, inside the project folder. @defaultValue `"train.py"` */
  readonly script?: string | undefined;
  /** Hyperparameters merged over the defaults. */
  readonly hyperparams?: Readonly<Record<string, HyperparamValue>> | undefined;
  /** Restart on another machine after a spot interruption. @defaultValue no recovery */
  readonly recover?: RecoverOptions | undefined;
  /** Called with every event. */
  readonly onEvent?: ((event: RunEvent) => void | Promise<void>) | undefined;
  /** Print progress. @defaultValue true */
  readonly verbose?: boolean | undefined;
}

/** What the example returns. */
export interface ContainerExampleOutcome {
  readonly runId: string;
  readonly result: RunResult;
  readonly lines: readonly string[];
  readonly events: readonly RunEvent[];
  readonly latest: Checkpoint | undefined;
  readonly verification: CheckpointVerification | undefined;
}

export async function main(options: ContainerExampleOptions = {}): Promise<ContainerExampleOutcome> {
  const say = options.verbose === false ? () => {} : (line: string) => console.log(line);
  const provider = options.provider ?? local();
  // A folder of this machine for local runs; on an SSH host, the host's own checkpoint folder.
  const storage = options.storage ?? (provider.sharesLocalFilesystem ? localDir(".runctl/checkpoints") : undefined);
  let plan = Runctl.instance(provider)
    .sync(options.project ?? join(here, "..", "training"))
    .container(options.image ?? "python:3.12-slim", options.container)
    .checkpoints(storage ? { storage, keep: 3 } : { keep: 3 });
  if (options.recover) plan = plan.recover(options.recover);
  const run = plan.train(options.script ?? "train.py", {
    hyperparams: { lr: 0.5, steps: 60, "batch-size": 32, "checkpoint-every": 20, ...options.hyperparams },
  });

  say(`run ${run.runId}`);
  const lines: string[] = [];
  const events: RunEvent[] = [];
  for await (const event of run) {
    events.push(event);
    if (event.type === "log") lines.push(event.line);
    if (event.type === "phase") say(`• ${event.phase}`);
    if (event.type === "metric" && event.step !== undefined && event.step % 10 === 0) say(`  step ${event.step}  ${JSON.stringify(event.values)}`);
    if (event.type === "checkpoint") say(`  checkpoint ${event.name} committed (${event.files} files, ${event.bytes} bytes)`);
    if (event.type === "warning") say(`  warning: ${event.message}`);
    if (event.type === "recovered") say(`  recovered (attempt ${event.attempt}) from ${event.fromCheckpoint ?? "the start"}`);
    await options.onEvent?.(event);
  }
  const result = await run;
  say(`• exit: ${result.status} (${result.exitCode !== null ? `code ${result.exitCode}` : (result.signal ?? result.error?.code ?? "no exit code")})`);
  if (result.error) say(`  ${result.error.code}: ${result.error.message}`);
  const latest = await run.checkpoints().latest();
  const verification = await latest?.verify();
  if (latest) say(`latest checkpoint: ${latest.name} (step ${latest.step ?? "?"}) — ${verification?.ok ? "sha256 verified" : "VERIFY FAILED"}`);
  return { runId: run.runId, result, lines, events, latest, verification };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const hosts = sshHostsFromEnv("RUNCTL_SSH_HOSTS");
  main({
    provider: hosts.length > 0 ? sshHosts(hosts) : local(),
    image: process.env["RUNCTL_IMAGE"],
    container: process.env["DOCKER_HOST"] ? { host: process.env["DOCKER_HOST"] } : undefined,
  }).then(
    ({ result, verification }) => process.exit(result.status === "succeeded" && verification?.ok !== false ? 0 : 1),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
