/**
 * A real PyTorch model on a real dataset (scikit-learn's bundled handwritten digits), on this machine:
 * training/train_torch.py, the PyTorch version of the template.
 *
 * Uses the interpreter that has torch and scikit-learn (Debian's /usr/bin/python3 with
 * python3-torch and python3-sklearn here; pass another with RUNCTL_PYTHON).
 *
 *   npx tsx examples/digits-pytorch.ts
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Runctl, local, localDir, type Checkpoint, type RunResult } from "runctl";

const here = dirname(fileURLToPath(import.meta.url));

export async function main(options: { readonly checkpointDir?: string; readonly python?: string; readonly verbose?: boolean } = {}): Promise<{ result: RunResult; accuracy: number | undefined; latest: Checkpoint | undefined }> {
  const say = options.verbose === false ? () => {} : (line: string) => console.log(line);
  const run = Runctl.instance(local())
    .sync(join(here, "..", "training"))
    .checkpoints({ storage: localDir(options.checkpointDir ?? ".runctl/checkpoints"), keep: 2 })
    .train("train_torch.py", { python: options.python ?? process.env["RUNCTL_PYTHON"] ?? "/usr/bin/python3" });
  let accuracy: number | undefined;
  for await (const event of run) {
    if (event.type === "metric" && event.step !== undefined && event.step % 50 === 0) say(`step ${event.step} loss ${String(event.values["loss"])}`);
    if (event.type === "log") {
      const match = /^TEST_ACCURACY ([0-9.]+)/.exec(event.line);
      if (match?.[1]) accuracy = Number(match[1]);
    }
  }
  const result = await run;
  const latest = await run.checkpoints().latest();
  say(`${result.status}: test accuracy ${accuracy}, latest checkpoint ${latest?.name}`);
  return { result, accuracy, latest };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().then(
    ({ result }) => process.exit(result.status === "succeeded" ? 0 : 1),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
