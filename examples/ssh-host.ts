/**
 * Train on an SSH machine you already have: sync -> setup -> train -> logs -> checkpoints -> cleanup.
 *
 *   RUNCTL_SSH_HOST=ml@10.0.0.5 RUNCTL_SSH_KEY=~/.ssh/id_ed25519 npx tsx examples/ssh-host.ts
 *
 * The host key must be in ~/.ssh/known_hosts (or RUNCTL_SSH_KNOWN_HOSTS). Checkpoints are committed on
 * the host under ~/.runctl/checkpoints (configure S3 storage to keep them elsewhere) and read back
 * through SSH.
 */
import { resolve, dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Runctl, isRunctlError, sshHosts, type Checkpoint, type HyperparamValue, type RunEvent, type RunResult, type SshHost } from "runctl";
import { sshHostsFromEnv } from "./ssh-env.js";

const here = dirname(fileURLToPath(import.meta.url));

export interface SshHostExampleOptions {
  /** The machine. */
  readonly host: SshHost;
  /** Hyperparameters merged over the defaults (any JSON value: strings arrive verbatim). */
  readonly hyperparams?: Readonly<Record<string, HyperparamValue>>;
  /** The training script inside test/fixtures/trainers/. @defaultValue "train_mnist_e2e.py" */
  readonly script?: string;
  /** Remove the run folder on the host at the end. @defaultValue true */
  readonly cleanup?: boolean;
  /** Called with every event. */
  readonly onEvent?: (event: RunEvent) => void;
  /** Print progress. @defaultValue true */
  readonly verbose?: boolean;
}

export async function main(options: SshHostExampleOptions): Promise<{ result: RunResult; latest: Checkpoint | undefined; lines: string[] }> {
  const say = options.verbose === false ? () => {} : (line: string) => console.log(line);
  const run = Runctl.instance(sshHosts(options.host))
    .sync(join(here, "..", "test", "fixtures", "trainers"))
    .setup({ requirements: "requirements.txt", pip: { noIndex: true } })
    .checkpoints({ keep: 2 })
    .train(options.script ?? "train_mnist_e2e.py", {
      hyperparams: { lr: 0.5, steps: 40, "checkpoint-every": 10, ...options.hyperparams },
      cleanup: options.cleanup ?? true,
    });
  const lines: string[] = [];
  for await (const event of run) {
    options.onEvent?.(event);
    if (event.type === "log") lines.push(event.line);
    if (event.type === "phase") say(`• ${event.phase}`);
    if (event.type === "checkpoint") say(`  checkpoint ${event.name} committed on the host`);
    if (event.type === "warning") say(`  warning: ${event.message}`);
  }
  const result = await run;
  const latest = await run.checkpoints().latest();
  say(`${result.status} on ${result.machine?.address}; latest checkpoint ${latest?.name ?? "none"}`);
  return { result, latest, lines };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const [target] = sshHostsFromEnv();
  if (!target) {
    console.error("set RUNCTL_SSH_HOST=user@host[:port] (and RUNCTL_SSH_KEY, RUNCTL_SSH_KNOWN_HOSTS if needed)");
    process.exit(2);
  }
  main({
    host: target,
  }).then(
    ({ result }) => process.exit(result.status === "succeeded" ? 0 : 1),
    (err: unknown) => {
      // Connection problems (HOST_UNREACHABLE, AUTH_FAILED, HOST_KEY_MISMATCH) reject before anything runs.
      console.error(isRunctlError(err) ? `${err.code}: ${err.message}` : err);
      process.exit(1);
    },
  );
}
