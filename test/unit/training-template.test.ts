// training/train.py is the template users copy (training/README.md shows no other copy of it), so
// it is run here as runctl runs it: `python3 -u train.py --name=value ...` with RUNCTL_* set, and
// checked against the trainer contract: metric lines, checkpoints renamed into place then marked
// `.done`, SIGTERM -> save and exit 0, resume from RUNCTL_RESUME_FROM to the same weights.
import { spawn } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";
import { tempDir } from "../support/temp-home.js";

const TEMPLATE = fileURLToPath(new URL("../../training/train.py", import.meta.url));

interface Trained {
  readonly code: number | null;
  readonly lines: string[];
  readonly stderr: string;
}

/** Runs the template; `onLine` sees each stdout line as it comes (and may signal the child). */
function train(args: string[], env: Record<string, string>, onLine?: (line: string, kill: () => void) => void): Promise<Trained> {
  return new Promise((resolve, reject) => {
    const child = spawn("python3", ["-u", TEMPLATE, ...args], { env: { PATH: process.env["PATH"] ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] });
    const lines: string[] = [];
    let partial = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      const parts = (partial + chunk).split("\n");
      partial = parts.pop() ?? "";
      for (const line of parts) {
        lines.push(line);
        onLine?.(line, () => child.kill("SIGTERM"));
      }
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, lines, stderr }));
  });
}

function weightsAt(checkpoint: string): unknown {
  return (JSON.parse(readFileSync(join(checkpoint, "model.json"), "utf8")) as { weights: unknown }).weights;
}

describe("training/train.py, the template (trainer contract)", () => {
  test("trains: one metric line per step, checkpoints renamed into place and marked .done, exit 0", async () => {
    const ckpt = tempDir("tpl-ckpt");
    const run = await train(["--steps=30", "--checkpoint-every=10", "--lr=0.5"], { RUNCTL_CHECKPOINT_DIR: ckpt });
    expect(run.code).toBe(0);
    const metrics = run.lines.filter((l) => l.startsWith("RUNCTL_METRIC ")).map((l) => JSON.parse(l.slice(14)) as { step: number; loss: number; accuracy: number });
    expect(metrics.map((m) => m.step)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(metrics.at(-1)!.loss).toBeLessThan(metrics[0]!.loss); // it learns
    expect(readdirSync(ckpt).sort()).toEqual(["step-00000010", "step-00000010.done", "step-00000020", "step-00000020.done", "step-00000030", "step-00000030.done"]);
    expect(JSON.parse(readFileSync(join(ckpt, "step-00000030.done"), "utf8"))).toEqual({ step: 30 });
    const accuracy = Number(/^TEST_ACCURACY ([0-9.]+)$/.exec(run.lines.find((l) => l.startsWith("TEST_ACCURACY")) ?? "")?.[1]);
    expect(accuracy).toBeGreaterThan(0.8);
    expect(run.lines.at(-1)).toBe("TRAINING_DONE");
  });

  test("SIGTERM: saves the step it is on and exits 0; resuming from it ends with the uninterrupted run's weights", async () => {
    const interruptedDir = tempDir("tpl-term");
    const first = await train(["--steps=100000", "--checkpoint-every=1000"], { RUNCTL_CHECKPOINT_DIR: interruptedDir }, (line, kill) => {
      if (line.startsWith('RUNCTL_METRIC {"step": 7,')) kill();
    });
    expect(first.code).toBe(0);
    const stoppedAt = Number(/^SIGTERM_CHECKPOINT (\d+)$/.exec(first.lines.at(-1) ?? "")?.[1]);
    expect(stoppedAt).toBeGreaterThanOrEqual(7);
    const name = `step-${String(stoppedAt).padStart(8, "0")}`;
    expect(readdirSync(interruptedDir).sort()).toEqual([name, `${name}.done`]); // no .tmp left behind

    const total = stoppedAt + 15;
    const resumed = await train([`--steps=${total}`, "--checkpoint-every=1000"], { RUNCTL_CHECKPOINT_DIR: interruptedDir, RUNCTL_RESUME_FROM: join(interruptedDir, name) });
    expect(resumed.code).toBe(0);
    expect(resumed.lines).toContain(`RESUMED_FROM_STEP ${stoppedAt}`);
    expect(resumed.lines).toContain(`START_STEP ${stoppedAt + 1}`);
    const resumedSteps = resumed.lines.filter((l) => l.startsWith("RUNCTL_METRIC ")).map((l) => (JSON.parse(l.slice(14)) as { step: number }).step);
    expect(resumedSteps).toEqual(Array.from({ length: 15 }, (_, i) => stoppedAt + 1 + i));

    const straightDir = tempDir("tpl-straight");
    const straight = await train([`--steps=${total}`, "--checkpoint-every=1000"], { RUNCTL_CHECKPOINT_DIR: straightDir });
    expect(straight.code).toBe(0);
    const last = `step-${String(total).padStart(8, "0")}`;
    expect(existsSync(join(interruptedDir, `${last}.done`))).toBe(true);
    expect(weightsAt(join(interruptedDir, last))).toEqual(weightsAt(join(straightDir, last)));
  });

  test("a misspelt or malformed hyperparameter exits 2 and names it, before training", async () => {
    for (const arg of ["--stepz=3", "--steps=ten", "--steps"]) {
      const run = await train([arg], { RUNCTL_CHECKPOINT_DIR: tempDir("tpl-bad") });
      expect(run.code, arg).toBe(2);
      expect(run.stderr).toContain(`bad argument '${arg}'`);
      expect(run.lines).toEqual([]);
    }
  });
});
