import { describe, expect, it } from "vitest";
import { Runctl, localDir } from "runctl";
import { main as sweep } from "../../examples/sweep.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("e2e-sweep");

describe("a sweep from one base plan (local, in parallel)", () => {
  it("runs each trial once with its own hyperparameters, run id and checkpoints", async () => {
    const ckpt = tempDir("sweep-ckpt");
    const lrs = [0.05, 0.5, 2.0];
    const { trials, best } = await sweep({ lrs, checkpointDir: ckpt });
    expect(trials.map((t) => t.result.status)).toEqual(["succeeded", "succeeded", "succeeded"]);
    expect(new Set(trials.map((t) => t.result.runId)).size).toBe(3);
    // Different learning rates really reached the trainers: their final losses differ.
    expect(new Set(trials.map((t) => t.final?.["loss"])).size).toBe(3);
    expect(best).toBeDefined();
    for (const t of trials) {
      const latest = await Runctl.checkpoints(localDir(ckpt), t.result.runId).latest();
      expect(latest?.step).toBe(80);
      expect((latest!.manifest.files.length)).toBeGreaterThan(0);
      expect((await latest!.verify()).ok).toBe(true);
    }
  });
});
