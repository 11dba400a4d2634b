import { createHash } from "node:crypto";
import { readFileSync, readdirSync, existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Runctl, RunctlError, localDir, type RunEvent } from "runctl";
import { main as quickstart } from "../../examples/quickstart.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";
import { FIXTURE_TRAINER, FIXTURE_TRAINERS_DIR } from "../fixtures/trainers.js";

const home = useTempRunctlHome("e2e-local");

function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

describe("quickstart (local provider, localDir storage)", () => {
  it("trains, streams every step, and commits checkpoints that verify byte for byte", async () => {
    const ckpt = tempDir("qs-ckpt");
    const events: RunEvent[] = [];
    const { result, latest, verification } = await quickstart({ checkpointDir: ckpt, verbose: false, onEvent: (e) => events.push(e) });

    expect(result.status).toBe("succeeded");
    expect(result.exitCode).toBe(0);
    expect(result.error).toBeUndefined();

    // Events: seq 1..n without gaps, phases in order, exit last.
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    const phases = events.filter((e) => e.type === "phase").map((e) => (e as { phase: string }).phase);
    expect(phases).toEqual(["provisioning", "syncing", "setup", "training", "teardown", "done"]);
    expect(events.at(-1)).toMatchObject({ type: "exit", status: "succeeded", exitCode: 0 });

    // Lines and events keep the order they happened in on the machine.
    const at = (pred: (e: RunEvent) => boolean): number => events.findIndex(pred);
    expect(at((e) => e.type === "phase" && e.phase === "training")).toBeLessThan(at((e) => e.type === "log" && e.line.startsWith("START_STEP")));
    for (const step of [20, 40]) {
      const saved = at((e) => e.type === "log" && e.line.startsWith(`CHECKPOINT_SAVED ${step} `));
      expect(saved).toBeGreaterThan(-1);
      expect(at((e) => e.type === "checkpoint" && e.step === step)).toBeGreaterThan(saved);
    }

    // One metric event per step, in order, and the trainer's last line.
    const steps = events.flatMap((e) => (e.type === "metric" && e.step !== undefined ? [e.step] : []));
    expect(steps).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    const lines = events.flatMap((e) => (e.type === "log" ? [e.line] : []));
    expect(lines).toContain("TRAINING_DONE");

    // keep: 3 -> exactly the newest three survive in storage; the latest is step 60.
    const store = Runctl.checkpoints(localDir(ckpt), result.runId);
    expect((await store.list()).map((c) => c.step)).toEqual([20, 40, 60]);
    expect(latest?.step).toBe(60);
    expect(verification?.ok).toBe(true);

    // Download and compare with the files the trainer wrote on the machine.
    const dest = tempDir("qs-dl");
    const path = await latest!.download(dest);
    const onMachine = join(home, "local", "runs", result.runId, "checkpoints", latest!.name);
    for (const file of latest!.manifest.files) {
      expect(sha256(join(path, file.path))).toBe(file.sha256);
      expect(sha256(join(onMachine, file.path))).toBe(file.sha256);
    }
  });

  it("a trainer that exits 3 is a failed run with exitCode 3, never a success", async () => {
    const { result } = await quickstart({ checkpointDir: tempDir("fail-ckpt"), verbose: false, project: FIXTURE_TRAINERS_DIR, script: FIXTURE_TRAINER, hyperparams: { "fail-at-step": 5 } });
    expect(result.status).toBe("failed");
    expect(result.exitCode).toBe(3);
    expect(result.error?.code).toBe("TRAINING_FAILED");
  });

  it("a missing script is a typed error before anything starts", () => {
    // The plan throws synchronously inside the async example, so its promise rejects.
    const runsBefore = existsSync(join(home, "runs")) ? readdirSync(join(home, "runs")).length : 0;
    return quickstart({ script: "no_such_script.py", verbose: false }).then(
      () => expect.unreachable("the run must not start"),
      (err: unknown) => {
        expect(err).toBeInstanceOf(RunctlError);
        expect((err as RunctlError).code).toBe("SCRIPT_NOT_FOUND");
        const runsAfter = existsSync(join(home, "runs")) ? readdirSync(join(home, "runs")).length : 0;
        expect(runsAfter).toBe(runsBefore);
      },
    );
  });

  it("hyperparameters arrive exactly: spaces, quotes, $, ;, newlines, lists, nested objects", async () => {
    const hostile = {
      name: "it's a \"test\" with $HOME and `id`; rm -rf / && echo pwned",
      multiline: "line one\nline two\n\ttabbed",
      empty: "",
      dashes: "--lr",
      unicode: "naïve ☃ 学习",
      layers: [64, 32, 16],
      nested: { optimizer: { name: "adam", betas: [0.9, 0.999] }, schedule: null, flags: [true, false] },
    };
    const events: RunEvent[] = [];
    const { result } = await quickstart({ checkpointDir: tempDir("hp-ckpt"), verbose: false, project: FIXTURE_TRAINERS_DIR, script: FIXTURE_TRAINER, hyperparams: { ...hostile, "echo-hparams": true, steps: 3 }, onEvent: (e) => events.push(e) });
    expect(result.status).toBe("succeeded");
    const echo = events.flatMap((e) => (e.type === "log" && e.line.startsWith("RUNCTL_HPARAMS_ECHO ") ? [e.line] : []));
    expect(echo).toHaveLength(1);
    const received = JSON.parse(echo[0]!.slice("RUNCTL_HPARAMS_ECHO ".length)) as { argv: Record<string, string>; env: Record<string, unknown> };
    // argv: strings verbatim, everything else as JSON text.
    for (const [key, value] of Object.entries(hostile)) {
      expect(received.argv[key]).toBe(typeof value === "string" ? value : JSON.stringify(value));
      expect(received.env[key]).toEqual(value);
    }
  });
});
