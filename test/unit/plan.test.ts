import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Runctl, RunctlError, local, localDir, type Provider } from "runctl";
import { hyperparamArgs, validateHyperparams } from "../../src/plan/hyperparams.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

const home = useTempRunctlHome("plan");

function project(): string {
  const dir = tempDir("proj");
  writeFileSync(join(dir, "train.py"), "print('hi')\n");
  return dir;
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(RunctlError);
    return (err as RunctlError).code;
  }
  return undefined;
}

describe("plan", () => {
  it("is immutable: every call returns a new plan and leaves the base untouched", () => {
    const base = Runctl.instance(local());
    const synced = base.sync(project());
    const withEnv = synced.env({ A: "1" });
    expect(synced).not.toBe(base);
    expect(base.state.sync).toBeUndefined();
    expect(synced.state.env).toEqual({});
    expect(withEnv.state.env).toEqual({ A: "1" });
    expect(Object.isFrozen(withEnv.state)).toBe(true);
  });

  it("rejects bad input with typed errors before anything is created", () => {
    const dir = project();
    const plan = Runctl.instance(local()).sync(dir);
    expect(codeOf(() => plan.train("missing.py"))).toBe("SCRIPT_NOT_FOUND");
    expect(codeOf(() => plan.train("../escape.py"))).toBe("INVALID_ARGUMENT");
    expect(codeOf(() => Runctl.instance(local()).sync(join(dir, "nope")))).toBe("SYNC_DIR_NOT_FOUND");
    expect(codeOf(() => plan.env({ "BAD NAME": "x" }))).toBe("INVALID_ARGUMENT");
    expect(codeOf(() => plan.env({ RUNCTL_RUN_ID: "x" }))).toBe("INVALID_ARGUMENT");
    expect(codeOf(() => plan.data("ftp://host/x"))).toBe("INVALID_URI");
    expect(codeOf(() => plan.checkpoints({ keep: 0 }))).toBe("INVALID_ARGUMENT");
    expect(codeOf(() => plan.budget({ maxDurationMs: -1 }))).toBe("INVALID_ARGUMENT");
    expect(codeOf(() => plan.train("train.py", { hyperparams: { lr: Number.NaN } }))).toBe("HYPERPARAM_NOT_SERIALIZABLE");
    expect(codeOf(() => plan.train("train.py", { hyperparams: { f: (() => 1) as never } }))).toBe("HYPERPARAM_NOT_SERIALIZABLE");
    expect(codeOf(() => plan.train("train.py", { hyperparams: { "bad key": 1 } }))).toBe("HYPERPARAM_NOT_SERIALIZABLE");
    expect(codeOf(() => plan.train("train.py", { runId: "../x" }))).toBe("INVALID_ARGUMENT");
    // Nothing was started: no run journal exists.
    expect(existsSync(join(home, "runs"))).toBe(false);
  });

  it("refuses a local folder as checkpoint storage for machines that cannot see it", () => {
    const remoteLike: Provider = { ...local(), name: "remote", sharesLocalFilesystem: false };
    expect(codeOf(() => Runctl.instance(remoteLike).checkpoints({ storage: localDir(tempDir("ck")) }))).toBe("STORAGE_UNREACHABLE");
  });

  it("plan() is a dry run that lists steps and the sync summary without side effects", async () => {
    const dir = project();
    mkdirSync(join(dir, "big"));
    writeFileSync(join(dir, "big", "blob.bin"), Buffer.alloc(4096));
    const summary = await Runctl.instance(local()).sync(dir).setup({ requirements: "requirements.txt" }).plan("train.py");
    expect(summary.provider).toBe("local");
    expect(summary.sync?.files).toBe(2);
    expect(summary.sync?.bytes).toBe(4096 + "print('hi')\n".length);
    expect(summary.steps.some((s) => s.includes("requirements.txt"))).toBe(true);
    expect(summary.estimate.hourlyUsd).toBe(0);
    expect(existsSync(join(home, "runs"))).toBe(false);
  });
});

describe("hyperparameters", () => {
  it("become --name=value arguments, lossless through JSON", () => {
    const hp = validateHyperparams({ lr: 0.001, name: "a b'c\"$x;\n", on: true, none: null, layers: [1, 2], opt: { beta: [0.9, 0.99] } });
    expect(hyperparamArgs(hp)).toEqual(["--lr=0.001", "--name=a b'c\"$x;\n", "--on=true", "--none=null", "--layers=[1,2]", '--opt={"beta":[0.9,0.99]}']);
  });

  it("names the offending path", () => {
    const cyclic: Record<string, unknown> = {};
    cyclic["self"] = cyclic;
    expect(() => validateHyperparams({ a: { b: [1, Infinity] } })).toThrow(/hyperparams\.a\.b\[1\] is Infinity/);
    expect(() => validateHyperparams({ c: cyclic })).toThrow(/circular/);
    expect(() => validateHyperparams({ d: new Date() })).toThrow(/Date/);
    expect(() => validateHyperparams({ e: 10n })).toThrow(/bigint/);
    expect(() => validateHyperparams({ f: undefined })).toThrow(/undefined/);
  });
});
