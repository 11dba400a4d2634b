/**
 * Start a run, let this process die, and reattach from another process.
 *
 * The run is supervised on the machine by runctl's agent, so it does not depend on the client.
 * `Runctl.attach(runId)` replays the local journal and follows the run live to its end, with no
 * lost or repeated log line.
 *
 *   npx tsx examples/attach.ts start      # prints RUN_ID <id> and follows; press Ctrl-C any time
 *   npx tsx examples/attach.ts <id>       # replays and follows to the end
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Runctl, local, localDir, type RunResult } from "runctl";

const here = dirname(fileURLToPath(import.meta.url));

/** Starts a slow run and follows it, printing every log line. Returns its id. */
export async function start(options: { readonly steps?: number; readonly checkpointDir?: string } = {}): Promise<string> {
  const run = Runctl.instance(local())
    .sync(join(here, "..", "test", "fixtures", "trainers"))
    .checkpoints({ storage: localDir(options.checkpointDir ?? ".runctl/checkpoints") })
    .train("train_mnist_e2e.py", { hyperparams: { lr: 0.5, steps: options.steps ?? 100, "sleep-per-step": 0.05, "checkpoint-every": 25 } });
  console.log(`RUN_ID ${run.runId}`);
  for await (const event of run) if (event.type === "log") console.log(event.line);
  await run;
  return run.runId;
}

/** Reattaches to a run and follows it to the end; returns its result and every log line. */
export async function reattach(runId: string, options: { readonly verbose?: boolean } = {}): Promise<{ result: RunResult; lines: string[]; seqs: number[] }> {
  const run = Runctl.attach(runId);
  const lines: string[] = [];
  const seqs: number[] = [];
  for await (const event of run) {
    seqs.push(event.seq);
    if (event.type === "log") {
      lines.push(event.line);
      if (options.verbose !== false) console.log(event.line);
    }
  }
  return { result: await run, lines, seqs };
}

/** `start` starts and follows a run; a run id reattaches to it. Resolves to the process exit code. */
export async function main(arg: string | undefined): Promise<number> {
  if (arg === undefined || arg === "start") {
    await start();
    return 0;
  }
  const { result } = await reattach(arg);
  return result.status === "succeeded" ? 0 : 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv[2]).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
