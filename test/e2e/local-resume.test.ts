import { describe, expect, it } from "vitest";
import { main as quickstart } from "../../examples/quickstart.js";
import { main as resume } from "../../examples/resume.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";
import { FIXTURE_TRAINER, FIXTURE_TRAINERS_DIR } from "../fixtures/trainers.js";

useTempRunctlHome("e2e-resume");

function finalWeights(lines: readonly string[]): string | undefined {
  return lines.map((l) => /^FINAL_STEP (\d+) weights_sha256=([0-9a-f]+)/.exec(l)).find((m) => m)?.[2];
}

describe("interrupt and resume (local)", () => {
  it("an interrupted run commits its SIGTERM checkpoint; a new run resumes from the next step and ends with the same weights as an uninterrupted run", async () => {
    const ckpt = tempDir("resume-ckpt");
    const { first, second, firstLog, secondLog } = await resume({ checkpointDir: ckpt, steps: 80, interruptAtStep: 30, verbose: false });

    expect(first.status).toBe("canceled");
    expect(first.exitCode).toBe(0); // the trainer saved and exited cleanly on SIGTERM
    const saved = firstLog.map((l) => /^SIGTERM_CHECKPOINT (\d+)/.exec(l)).find((m) => m);
    expect(saved).toBeDefined();
    const savedStep = Number(saved![1]);
    expect(savedStep).toBeGreaterThanOrEqual(30);
    expect(savedStep).toBeLessThan(80);
    // The SIGTERM checkpoint was committed and is the first run's last checkpoint.
    expect(first.checkpoints.at(-1)?.step).toBe(savedStep);

    expect(second.status).toBe("succeeded");
    expect(secondLog).toContain(`RESUMED_FROM_STEP ${savedStep}`);
    expect(secondLog).toContain(`START_STEP ${savedStep + 1}`);

    // The same hyperparameters without an interruption.
    const straightLines: string[] = [];
    const straight = await quickstart({
      checkpointDir: tempDir("straight"),
      verbose: false,
      project: FIXTURE_TRAINERS_DIR,
      script: FIXTURE_TRAINER,
      hyperparams: { steps: 80, "checkpoint-every": 10, "sleep-per-step": 0.02 },
      onEvent: (e) => void (e.type === "log" && straightLines.push(e.line)),
    });
    expect(straight.result.status).toBe("succeeded");
    expect(finalWeights(secondLog)).toBeDefined();
    expect(finalWeights(secondLog)).toBe(finalWeights(straightLines));
  });
});
