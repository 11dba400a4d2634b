/**
 * Install dependencies on an SSH machine before training, offline, from wheels that travel with the code.
 *
 *   RUNCTL_SSH_HOST=ml@10.0.0.5 RUNCTL_SSH_KEY=~/.ssh/id_ed25519 npx tsx examples/ssh-requirements.ts <project-dir> <script> [wheelhouse]
 *
 * The project folder holds the script, requirements.txt and (here) a `wheels/` folder of wheels. It is
 * synced to the host, and pip runs in the run's copy of it, so `findLinks: ["wheels"]` names that
 * copy; an absolute path names a folder already on the host. requirements.txt is installed into a venv
 * keyed by its hash: the next run with the same file reuses it (`setup` event: `reused: true`).
 * A failed install fails the run with pip's message; training never starts.
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { Runctl, isRunctlError, sshHosts, type RunResult, type SetupEvent, type SshHost, type SyncEvent } from "runctl";
import { sshHostsFromEnv } from "./ssh-env.js";

export interface SshRequirementsOptions {
  /** The machine. */
  readonly host: SshHost;
  /** The project folder (synced), holding the script and requirements.txt. */
  readonly projectDir: string;
  /** The training script inside it. */
  readonly script: string;
  /** Folder of wheels on the host: relative to the synced project, or absolute. @defaultValue "wheels" */
  readonly wheelhouse?: string;
  /** The requirements file inside the project. @defaultValue "requirements.txt" */
  readonly requirements?: string;
  /** Print progress. @defaultValue true */
  readonly verbose?: boolean;
}

export async function main(options: SshRequirementsOptions): Promise<{ result: RunResult; setup: SetupEvent | undefined; sync: SyncEvent | undefined; lines: string[] }> {
  const say = options.verbose === false ? () => {} : (line: string) => console.log(line);
  const run = Runctl.instance(sshHosts(options.host))
    .sync(options.projectDir)
    .setup({
      requirements: options.requirements ?? "requirements.txt",
      // No package index: pip may only use the wheels we brought.
      pip: { noIndex: true, findLinks: [options.wheelhouse ?? "wheels"] },
    })
    .train(options.script, { cleanup: true });
  let setup: SetupEvent | undefined;
  let sync: SyncEvent | undefined;
  const lines: string[] = [];
  for await (const event of run) {
    if (event.type === "sync") sync = event;
    if (event.type === "setup") setup = event;
    if (event.type === "log") lines.push(event.line);
  }
  const result = await run;
  say(`synced ${sync?.files ?? 0} files (${sync?.uploadedFiles ?? 0} sent) to ${result.machine?.address ?? options.host.host}`);
  say(setup ? `setup: venv ${setup.reused ? "reused" : "created"} in ${setup.durationMs} ms (${setup.venv})` : "setup: did not finish");
  say(`run ${result.status}${result.error ? `: ${result.error.code} ${result.error.message}` : ""}`);
  if (result.error?.outputTail) say(result.error.outputTail.trimEnd());
  return { result, setup, sync, lines };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const [target] = sshHostsFromEnv();
  const [projectDir, script, wheelhouse] = process.argv.slice(2);
  if (!target || !projectDir || !script) {
    console.error("usage: RUNCTL_SSH_HOST=user@host[:port] [RUNCTL_SSH_KEY=...] [RUNCTL_SSH_KNOWN_HOSTS=...] npx tsx examples/ssh-requirements.ts <project-dir> <script> [wheelhouse]");
    process.exit(2);
  }
  main({
    host: target,
    projectDir,
    script,
    ...(wheelhouse ? { wheelhouse } : {}),
  }).then(
    ({ result }) => process.exit(result.status === "succeeded" ? 0 : 1),
    (err: unknown) => {
      console.error(isRunctlError(err) ? `${err.code}: ${err.message}` : err);
      process.exit(1);
    },
  );
}
