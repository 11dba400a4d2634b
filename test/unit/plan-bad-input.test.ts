/**
 * Input that could never reach the trainer exactly (issue 10, items 16-18) is refused at the plan
 * call with a typed error, before a machine is asked for: NUL characters, lone surrogates, values
 * over the operating system's argument limit, bad variable names, checkpoint folders outside the
 * workdir. Hyperparameters travel as one `--name=value` argument each.
 */
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Runctl, RunctlError, local, type Provider } from "runctl";
import { hyperparamArgs, validateHyperparams } from "../../src/plan/hyperparams.js";
import { MAX_ARG_BYTES } from "../../src/plan/os-limits.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

const home = useTempRunctlHome("plan-bad-input");

/** local(), counting every machine asked for: a refused plan must ask for none. */
function countingLocal(): Provider & { provisioned: number } {
  const base = local();
  const provider = {
    ...base,
    provisioned: 0,
    provision: (...args: Parameters<Provider["provision"]>) => {
      provider.provisioned += 1;
      return base.provision(...args);
    },
  };
  return provider;
}

function project(): string {
  const dir = tempDir("bad-input-proj");
  writeFileSync(join(dir, "train.py"), "print('hi')\n");
  return dir;
}

function errorOf(fn: () => unknown): RunctlError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(RunctlError);
    return err as RunctlError;
  }
  throw new Error("expected a RunctlError, nothing was thrown");
}

const LONE_HIGH = "abc\uD800def";
const LONE_LOW = "\uDC00";
const OVER_LIMIT = "x".repeat(MAX_ARG_BYTES + 1);

describe("bad input is refused at the plan call, before anything is created", () => {
  it("hyperparameters with NUL, lone surrogates or over the argument limit: HYPERPARAM_NOT_SERIALIZABLE at .train() and .plan()", () => {
    const provider = countingLocal();
    const plan = Runctl.instance(provider).sync(project());
    const bad: Record<string, unknown>[] = [
      { note: "a\0b" },
      { note: LONE_HIGH },
      { note: LONE_LOW },
      { nested: { list: ["ok", "x\0"] } },
      { nested: { ["k\0"]: 1 } },
      { note: OVER_LIMIT },
      // Each argument fits, but RUNCTL_HPARAMS (all of them as one variable) does not.
      { a: "y".repeat(70_000), b: "z".repeat(70_000) },
      // Non-ASCII is escaped (\uXXXX) in RUNCTL_HPARAMS: 30,000 characters become 180,000 bytes.
      { note: "☃".repeat(30_000) },
    ];
    for (const hyperparams of bad) {
      const err = errorOf(() => plan.train("train.py", { hyperparams: hyperparams as never }));
      expect(err.code, JSON.stringify(Object.keys(hyperparams))).toBe("HYPERPARAM_NOT_SERIALIZABLE");
      // .plan() throws synchronously too, like .train().
      expect(errorOf(() => plan.plan("train.py", { hyperparams: hyperparams as never })).code).toBe("HYPERPARAM_NOT_SERIALIZABLE");
    }
    expect(errorOf(() => plan.train("train.py", { hyperparams: { note: "a\0b" } })).message).toMatch(/hyperparams\.note.*NUL/);
    expect(errorOf(() => plan.train("train.py", { hyperparams: { note: OVER_LIMIT } })).message).toMatch(/limit of 131071 bytes/);
    expect(provider.provisioned).toBe(0);
    expect(existsSync(join(home, "runs"))).toBe(false);
  });

  it("env values with NUL, lone surrogates or over the limit, and invalid names: INVALID_ARGUMENT at .env()", () => {
    const provider = countingLocal();
    const plan = Runctl.instance(provider).sync(project());
    for (const value of ["tok\0en", LONE_HIGH, LONE_LOW, OVER_LIMIT]) {
      expect(errorOf(() => plan.env({ HF_TOKEN: value })).code).toBe("INVALID_ARGUMENT");
    }
    for (const name of ["1ABC", "A-B", "A=B", "", "A\0", "A B"]) {
      expect(errorOf(() => plan.env({ [name]: "x" })).code, JSON.stringify(name)).toBe("INVALID_ARGUMENT");
    }
    expect(errorOf(() => plan.env({ HF_TOKEN: "tok\0en" })).message).toMatch(/HF_TOKEN.*NUL/);
    // Declared values that fit are kept exactly, the largest one included.
    const fits = "v".repeat(MAX_ARG_BYTES - "HF_TOKEN=".length);
    expect(plan.env({ HF_TOKEN: fits }).state.env["HF_TOKEN"]).toBe(fits);
    expect(provider.provisioned).toBe(0);
  });

  it("args with NUL, and a command line plus environment over the OS total: INVALID_ARGUMENT at .train()", () => {
    const provider = countingLocal();
    const plan = Runctl.instance(provider).sync(project());
    expect(errorOf(() => plan.train("train.py", { args: ["--x", "a\0"] })).code).toBe("INVALID_ARGUMENT");
    expect(errorOf(() => plan.train("train.py", { args: [LONE_LOW] })).code).toBe("INVALID_ARGUMENT");
    // Every variable fits alone; together they exceed what execve takes.
    const env: Record<string, string> = {};
    for (let i = 0; i < 12; i++) env[`BIG_${i}`] = "e".repeat(100_000);
    const big = plan.env(env);
    const err = errorOf(() => big.train("train.py"));
    expect(err.code).toBe("INVALID_ARGUMENT");
    expect(err.message).toMatch(/arguments and environment come to \d+ bytes/);
    expect(provider.provisioned).toBe(0);
  });

  it(".checkpoints({ dir }) must stay inside the workdir, like .data({ to })", () => {
    const plan = Runctl.instance(local()).sync(project());
    for (const dir of ["/tmp/ckpt", "..", "../ckpt", "a/../../ckpt", ".", "ck\0pt"]) {
      expect(errorOf(() => plan.checkpoints({ dir })).code, dir).toBe("INVALID_ARGUMENT");
    }
    expect(plan.checkpoints({ dir: "out/./ckpt/" }).state.checkpoints?.dir).toBe("out/ckpt/");
    expect(plan.checkpoints({ dir: "..ckpt" }).state.checkpoints?.dir).toBe("..ckpt");
  });
});

describe("hyperparameters on the command line", () => {
  it("are one --name=value argument each, so a value starting with '-' is never an option", () => {
    const hp = validateHyperparams({ lr: 0.001, note: "--lr=100", dash: "-", empty: "", eq: "a=b", layers: [1, 2] });
    expect(hyperparamArgs(hp)).toEqual(["--lr=0.001", "--note=--lr=100", "--dash=-", "--empty=", "--eq=a=b", "--layers=[1,2]"]);
  });
});
