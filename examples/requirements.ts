/**
 * Install dependencies before training, offline.
 *
 * `.setup({ requirements })` installs requirements.txt into a venv keyed by the file's hash (reused
 * while it is unchanged); pip options pass through, so `--no-index --find-links <wheelhouse>` works
 * with no internet. A failed install fails the run with pip's message; training never starts.
 *
 *   npx tsx examples/requirements.ts <project-dir> <script> <wheelhouse-dir>
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { Runctl, local, type RunResult, type SetupEvent } from "runctl";

export interface RequirementsOptions {
  /** The project folder (synced), holding the script and requirements.txt. */
  readonly projectDir: string;
  /** The training script inside it. */
  readonly script: string;
  /** A folder of wheels to install from, with no package index. */
  readonly wheelhouse: string;
  /** The requirements file inside the project. @defaultValue "requirements.txt" */
  readonly requirements?: string;
}

export async function main(options: RequirementsOptions): Promise<{ result: RunResult; setup: SetupEvent | undefined; lines: string[] }> {
  const run = Runctl.instance(local())
    .sync(options.projectDir)
    .setup({ requirements: options.requirements ?? "requirements.txt", pip: { noIndex: true, findLinks: [resolve(options.wheelhouse)] } })
    .train(options.script);
  let setup: SetupEvent | undefined;
  const lines: string[] = [];
  for await (const event of run) {
    if (event.type === "setup") setup = event;
    if (event.type === "log") lines.push(event.line);
  }
  const result = await run;
  console.log(`setup: venv ${setup?.reused ? "reused" : "created"} in ${setup?.durationMs ?? "?"} ms; run ${result.status}${result.error ? `: ${result.error.message}` : ""}`);
  return { result, setup, lines };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const [projectDir, script, wheelhouse] = process.argv.slice(2);
  if (!projectDir || !script || !wheelhouse) {
    console.error("usage: npx tsx examples/requirements.ts <project-dir> <script> <wheelhouse-dir>");
    process.exit(2);
  }
  main({ projectDir, script, wheelhouse }).then(
    ({ result }) => process.exit(result.status === "succeeded" ? 0 : 1),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
