/**
 * What a trainer started through local() gets, on a real run (issue 10, items 15 and 17): only the
 * environment the run declares (never the client's AWS keys or other variables), private run
 * records on disk (run folder 0700, files 0600: spec.json holds the `.env()` tokens), and one
 * `--name=value` argument per hyperparameter, so argparse never reads a value as an option; a
 * script whose name starts with `-` runs as a script, not as an interpreter option.
 */
import { readdirSync, statSync, writeFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Runctl, local, localDir, type RunEvent } from "runctl";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

const home = useTempRunctlHome("e2e-trainer-contract");

const CLIENT_VARS = {
  AWS_ACCESS_KEY_ID: "AKIACLIENTONLY0000001",
  AWS_SECRET_ACCESS_KEY: "client/secret+Never-In-Trainer-7f3e",
  AWS_SESSION_TOKEN: "client-session-token-9d2c",
  RUNCTL_TEST_CLIENT_ONLY: "client-only-value-5b1a",
} as const;

afterEach(() => {
  for (const name of Object.keys(CLIENT_VARS)) delete process.env[name];
});

async function collect(run: AsyncIterable<RunEvent>): Promise<string[]> {
  const lines: string[] = [];
  for await (const e of run) if (e.type === "log") lines.push(e.line);
  return lines;
}

function modeOf(path: string): string {
  return (statSync(path).mode & 0o777).toString(8);
}

describe("a trainer started through local()", () => {
  it("sees only the run's declared environment, and the run's records on disk are private (0700 folder, 0600 files)", async () => {
    Object.assign(process.env, CLIENT_VARS);
    const code = tempDir("contract-env");
    writeFileSync(join(code, "envdump.py"), "import json, os\nprint('ENV ' + json.dumps(dict(os.environ), sort_keys=True), flush=True)\n");
    const run = Runctl.instance(local())
      .sync(code)
      .env({ WANDB_API_KEY: "wandb-declared-token-42", HF_TOKEN: "hf_declared_token_43" })
      .checkpoints({ storage: localDir(tempDir("contract-ckpt")) })
      .train("envdump.py");
    const lines = await collect(run);
    const result = await run;
    expect(result.status, JSON.stringify(result.error)).toBe("succeeded");

    const dumped = lines.find((l) => l.startsWith("ENV "));
    expect(dumped).toBeDefined();
    const env = JSON.parse(dumped!.slice(4)) as Record<string, string>;
    // Declared: present. The client's own variables, its AWS credentials first: absent.
    expect(env["WANDB_API_KEY"]).toBe("wandb-declared-token-42");
    expect(env["HF_TOKEN"]).toBe("hf_declared_token_43");
    for (const name of Object.keys(CLIENT_VARS)) expect(env[name], name).toBeUndefined();
    expect(Object.keys(env).filter((n) => n.startsWith("AWS_"))).toEqual([]);
    for (const value of Object.values(CLIENT_VARS)) expect(dumped).not.toContain(value);
    // What the machine's programs need is still there.
    // (pyenv-style shims may put their own folder first.)
    expect(env["PATH"]).toContain(process.env["PATH"]!);
    expect(env["HOME"]).toBe(process.env["HOME"]);
    expect(env["RUNCTL_RUN_ID"]).toBe(run.runId);

    // The run folder holds the declared tokens (spec.json): readable by the user only.
    const runDir = join(home, "local", "runs", run.runId);
    expect(readFileSync(join(runDir, "spec.json"), "utf8")).toContain("wandb-declared-token-42");
    expect(modeOf(runDir)).toBe("700");
    for (const name of ["spec.json", "events.jsonl", "train.log", "agent.log", "status.json", "exit_code"]) {
      expect(modeOf(join(runDir, name)), name).toBe("600");
    }
    // No file of the run's own records is readable by group or others.
    for (const name of readdirSync(runDir)) {
      const st = statSync(join(runDir, name));
      if (st.isFile()) expect(st.mode & 0o077, name).toBe(0);
    }
  });
});

describe("hyperparameters and the script path on the trainer's command line", () => {
  it("reach an argparse trainer as --name=value: a string value '--lr=100' stays a string and lr is unchanged", async () => {
    const code = tempDir("contract-argparse");
    writeFileSync(
      join(code, "train_argparse.py"),
      [
        "import argparse, json, sys",
        "p = argparse.ArgumentParser()",
        "p.add_argument('--lr', type=float, default=0.1)",
        "p.add_argument('--note', type=str, default='')",
        "p.add_argument('--dash', type=str, default='')",
        "a = p.parse_args()",
        "print('PARSED ' + json.dumps({'lr': a.lr, 'note': a.note, 'dash': a.dash, 'argv': sys.argv[1:]}), flush=True)",
        "",
      ].join("\n"),
    );
    const run = Runctl.instance(local()).sync(code).checkpoints({ storage: localDir(tempDir("contract-ckpt2")) }).train("train_argparse.py", { hyperparams: { lr: 0.5, note: "--lr=100", dash: "-x" } });
    const lines = await collect(run);
    const result = await run;
    expect(result.status, lines.slice(-5).join("\n")).toBe("succeeded");
    const parsed = JSON.parse(lines.find((l) => l.startsWith("PARSED "))!.slice(7)) as { lr: number; note: string; dash: string; argv: string[] };
    expect(parsed).toEqual({ lr: 0.5, note: "--lr=100", dash: "-x", argv: ["--lr=0.5", "--note=--lr=100", "--dash=-x"] });
  });

  it("runs a script whose name starts with '-' (-V.py) as the script, never as an interpreter option", async () => {
    const code = tempDir("contract-dash-script");
    writeFileSync(join(code, "-V.py"), "import sys\nprint('SCRIPT_RAN ' + sys.argv[0], flush=True)\n");
    const run = Runctl.instance(local()).sync(code).checkpoints({ storage: localDir(tempDir("contract-ckpt3")) }).train("-V.py");
    const lines = await collect(run);
    const result = await run;
    expect(result.status, lines.slice(-5).join("\n")).toBe("succeeded");
    expect(lines.some((l) => l.startsWith("SCRIPT_RAN ") && l.endsWith("-V.py"))).toBe(true);
    // Python's version banner (what `python -u -V.py` prints) never appears.
    expect(lines.some((l) => /^Python \d/.test(l))).toBe(false);
  });
});
