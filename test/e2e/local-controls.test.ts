import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { Runctl } from "runctl";
import { abortAfter, overBudget, stopAt, trainOnData } from "../../examples/controls.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("e2e-controls");
const ckpt = tempDir("controls-ckpt");

/** Processes whose command line names the run (agent or trainer), after giving the agent a moment to exit. */
async function leftovers(runId: string): Promise<string[]> {
  for (let i = 0; ; i++) {
    const pids = readdirSync("/proc").filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid).filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, "utf8").includes(runId);
      } catch {
        return false;
      }
    });
    if (pids.length === 0 || i >= 20) return pids;
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("data, limits and cancellation (local)", () => {
  it(".data() copies a dataset into the workdir before training and the trainer reads it", async () => {
    const dataset = tempDir("dataset");
    execFileSync("python3", ["test/fixtures/trainers/train_mnist_e2e.py", "--export-dataset", dataset]);
    const { result, lines } = await trainOnData(dataset, ckpt);
    expect(result.status).toBe("succeeded");
    const info = JSON.parse(lines.find((l) => l.startsWith("DATASET "))!.slice("DATASET ".length)) as { source: string; path: string; train: number };
    expect(info.source).toBe("file");
    expect(info.train).toBe(2000);
    expect(info.path).toContain(`/runs/${result.runId}/code/data/train.csv`);
  });

  it(".budget({ maxDurationMs }) stops the run on the machine: failed with MAX_DURATION_EXCEEDED, final checkpoint committed", async () => {
    const { result, lines } = await overBudget(2500, ckpt);
    expect(result.status).toBe("failed");
    expect(result.error?.code).toBe("MAX_DURATION_EXCEEDED");
    expect(lines.some((l) => l.startsWith("SIGTERM_CHECKPOINT"))).toBe(true);
    expect(lines).not.toContain("TRAINING_DONE");
    expect(result.checkpoints.length).toBeGreaterThan(0);
    expect(await leftovers(result.runId)).toEqual([]);
  });

  it("cancel interrupt: SIGTERM, the trainer saves, status canceled; kill: SIGKILL at once", async () => {
    const interrupted = await stopAt("interrupt", 10, ckpt);
    expect(interrupted.result.status).toBe("canceled");
    expect(interrupted.result.exitCode).toBe(0);
    expect(interrupted.lines.some((l) => l.startsWith("SIGTERM_CHECKPOINT"))).toBe(true);
    expect((await interrupted.run.checkpoints().latest())?.name).toBe(interrupted.result.checkpoints.at(-1)?.name);

    const killed = await stopAt("kill", 10, ckpt);
    expect(killed.result.status).toBe("canceled");
    expect(killed.result.signal).toBe("SIGKILL");
    expect(killed.lines.some((l) => l.startsWith("SIGTERM_CHECKPOINT"))).toBe(false);
    expect(await leftovers(killed.result.runId)).toEqual([]);
  });

  it("cancel detach: the client stops following, the run finishes on its own, attach sees the end", async () => {
    const { run, result } = await stopAt("detach", 5, ckpt, 60);
    expect(result.status).toBe("detached");
    const reattached = Runctl.attach(run.runId);
    let sawDone = false;
    for await (const event of reattached) if (event.type === "log" && event.line === "TRAINING_DONE") sawDone = true;
    expect((await reattached).status).toBe("succeeded");
    expect(sawDone).toBe(true);
  });

  it("an AbortSignal on .train() interrupts the run", async () => {
    const { result, lines } = await abortAfter(1500, ckpt);
    expect(result.status).toBe("canceled");
    expect(lines.some((l) => l.startsWith("SIGTERM_CHECKPOINT"))).toBe(true);
  });
});
