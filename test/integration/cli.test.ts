import { spawn } from "node:child_process";
import { appendFileSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { Runctl, local, localDir, type RunResult, type TrainingRun } from "runctl";
import { recordResourceCreated, recordResourceDeleted } from "../../src/ledger/index.js";
import { runCli, type CliIo, type SweepFn, type SweepReport, type SweepRequest } from "../../src/cli/run-cli.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

const home = useTempRunctlHome("e2e-cli");
const ckpt = tempDir("cli-ckpt");
const repo = fileURLToPath(new URL("../..", import.meta.url));
const training = join(repo, "test", "fixtures", "trainers");
const UNKNOWN = "20991231-000000-nosuch";

interface Outcome {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

/** The CLI in-process, with captured streams. */
async function cli(argv: string[], extra: Partial<CliIo> = {}): Promise<Outcome> {
  let out = "";
  let err = "";
  const code = await runCli(argv, { stdout: { write: (s: string) => (out += s) }, stderr: { write: (s: string) => (err += s) }, cwd: repo, ...extra });
  return { code, out, err };
}

/** The CLI as its own process (the bin's source under tsx), as a user runs it. */
function spawnCli(args: string[], via: "node" | "npx" = "node"): { child: ReturnType<typeof spawn>; out: () => string; done: Promise<Outcome & { signal: NodeJS.Signals | null }> } {
  // `node --import tsx` keeps it one process, so a SIGINT reaches the CLI itself.
  const [command, argv] = via === "node" ? [process.execPath, ["--import", "tsx", "src/cli/cli-main.ts", ...args]] : ["npx", ["tsx", "src/cli/cli-main.ts", ...args]];
  const child = spawn(command, argv, { cwd: repo, env: { ...process.env, RUNCTL_HOME: home }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const done = new Promise<Outcome & { signal: NodeJS.Signals | null }>((resolve) => child.on("close", (code, signal) => resolve({ code: code ?? -1, signal, out, err })));
  return { child, out: () => out, done };
}

async function until(what: string, test: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!test()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Processes whose command line names the run (agent or trainer), after giving them a moment to exit. */
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

const started: TrainingRun[] = [];

/** A real local run of the sample trainer, followed by this process; collects its log lines as they come. */
function startRun(hyperparams: Record<string, number>): { run: TrainingRun; lines: string[]; finished: Promise<RunResult> } {
  const run = Runctl.instance(local()).sync(training).checkpoints({ storage: localDir(ckpt) }).train("train_mnist_e2e.py", { hyperparams });
  started.push(run);
  const lines: string[] = [];
  const finished = (async () => {
    for await (const e of run) if (e.type === "log") lines.push(e.line);
    return await run;
  })();
  return { run, lines, finished };
}

// A failed test must not leave a long trainer running: stop whatever is still going (a no-op for ended runs).
afterEach(async () => {
  for (const run of started.splice(0)) {
    await run.cancel({ strategy: "kill" }).catch(() => {});
    await Promise.resolve(run).catch(() => {});
  }
});

let done: { runId: string; lines: string[]; result: RunResult };

beforeAll(async () => {
  const { run, lines, finished } = startRun({ lr: 0.5, steps: 60, "checkpoint-every": 20 });
  const result = await finished;
  expect(result.status).toBe("succeeded");
  done = { runId: run.runId, lines, result };
});

describe("runctl on finished runs (in-process)", () => {
  it("ls --json: one JSON document listing the run, succeeded, with its script; ledger resources too", async () => {
    recordResourceCreated({ kind: "instance", id: "i-0cli", provider: "ec2", region: "eu-west-1", runId: done.runId, createdAt: new Date(Date.now() - 90_000).toISOString(), expiresAt: new Date(Date.now() + 3_600_000).toISOString(), tags: {} });
    recordResourceCreated({ kind: "volume", id: "vol-0gone", provider: "ec2", region: "eu-west-1", createdAt: new Date().toISOString(), tags: {} });
    recordResourceDeleted("volume", "vol-0gone");

    const { code, out, err } = await cli(["ls", "--json"]);
    expect(code).toBe(0);
    expect(err).toBe("");
    expect(out.endsWith("\n") && out.indexOf("\n") === out.length - 1).toBe(true);
    const doc = JSON.parse(out) as { schemaVersion: number; runs: Record<string, unknown>[]; resources: Record<string, unknown>[] };
    expect(doc.schemaVersion).toBe(1);
    const row = doc.runs.find((r) => r["runId"] === done.runId);
    expect(row).toMatchObject({ provider: "local", script: "train_mnist_e2e.py", status: "succeeded", restarts: 0, costUsd: null, durationMs: done.result.durationMs });
    expect(doc.resources).toEqual([expect.objectContaining({ kind: "instance", id: "i-0cli", region: "eu-west-1", runId: done.runId, persistent: false })]);
    expect(doc.resources[0]!["ageMs"]).toBeGreaterThanOrEqual(90_000);

    const human = await cli(["ls"]);
    expect(human.code).toBe(0);
    const lines = human.out.split("\n");
    expect(lines[0]).toMatch(/^RUN\s+PROVIDER\s+SCRIPT\s+CREATED\s+STATUS\s+DURATION\s+RESTARTS\s+COST$/);
    expect(lines.find((l) => l.startsWith(done.runId))).toMatch(/local\s+train_mnist_e2e\.py\s+.*succeeded\s+.*\s0\s+-$/);
    expect(human.out).toMatch(/RESOURCE\s+ID\s+REGION\s+RUN\s+AGE\s+EXPIRES\n/);
    expect(human.out).toMatch(new RegExp(`instance\\s+i-0cli\\s+eu-west-1\\s+${done.runId}\\s+1m 3\\ds\\s+in 59m`));
    expect(human.out).not.toContain("vol-0gone");
  });

  it("logs RUN prints exactly the trainer's lines; --json is one document; -f on an ended run ends at once", async () => {
    const plain = await cli(["logs", done.runId]);
    expect(plain.code).toBe(0);
    expect(plain.err).toBe("");
    expect(plain.out).toBe(done.lines.map((l) => `${l}\n`).join(""));
    expect(done.lines).toContain("TRAINING_DONE");

    const json = await cli(["logs", done.runId, "--json"]);
    expect(JSON.parse(json.out)).toEqual({ schemaVersion: 1, runId: done.runId, status: "succeeded", lines: done.lines });

    const follow = await cli(["logs", done.runId, "-f", "--json"]);
    expect(follow.code).toBe(0);
    const events = follow.out.trimEnd().split("\n").map((l) => JSON.parse(l) as { schemaVersion: number; type: string; line: string });
    expect(events.every((e) => e.type === "log" && e.schemaVersion === 1)).toBe(true);
    expect(events.map((e) => e.line)).toEqual(done.lines);
  });

  it("attach RUN replays every event: JSON lines with gap-free seq and the exit last; a human rendering", async () => {
    const json = await cli(["attach", done.runId, "--json"]);
    expect(json.code).toBe(0);
    const events = json.out.trimEnd().split("\n").map((l) => JSON.parse(l) as { schemaVersion: number; type: string; seq: number; status?: string });
    expect(events.every((e) => e.schemaVersion === 1)).toBe(true);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    expect(events.at(-1)).toMatchObject({ type: "exit", status: "succeeded" });
    expect(events.filter((e) => e.type === "checkpoint")).toHaveLength(3);

    const human = await cli(["attach", done.runId]);
    expect(human.code).toBe(0);
    expect(human.out).toContain(`run ${done.runId} (local, train_mnist_e2e.py)\n`);
    expect(human.out).toContain("• training\n");
    expect(human.out).toMatch(/ {2}metric step 60: loss=\d+\.\d{4}/);
    expect(human.out).toMatch(/ {2}checkpoint step-0*60 committed \(step 60, \d+ files, [\d.]+ KiB\)/);
    expect(human.out).toMatch(/• exit: succeeded \(code 0\) after /);
    expect(human.out).toContain("TRAINING_DONE\n");
    expect(human.out).not.toContain("RUNCTL_METRIC");
  });

  it("checkpoints RUN --json lists the committed checkpoints with steps; --verify checks them, and fails on a corrupt one", async () => {
    const { code, out } = await cli(["checkpoints", done.runId, "--json"]);
    expect(code).toBe(0);
    const doc = JSON.parse(out) as { storage: string; checkpoints: { name: string; step: number; files: number; bytes: number; committedAt: string }[] };
    expect(doc.storage).toMatch(/^file:\/\//);
    expect(doc.checkpoints.map((c) => c.step)).toEqual([20, 40, 60]);
    expect(doc.checkpoints.map((c) => c.name)).toEqual(done.result.checkpoints.map((c) => c.name));
    for (const c of doc.checkpoints) {
      expect(c.files).toBeGreaterThan(0);
      expect(c.bytes).toBeGreaterThan(0);
      expect(Number.isNaN(Date.parse(c.committedAt))).toBe(false);
    }

    const verified = await cli(["checkpoints", done.runId, "--verify"]);
    expect(verified.code).toBe(0);
    expect(verified.out.split("\n")[0]).toMatch(/^NAME\s+STEP\s+FILES\s+BYTES\s+COMMITTED\s+VERIFIED$/);
    expect(verified.out.trimEnd().split("\n").slice(1).every((l) => l.endsWith("  ok"))).toBe(true);

    // Flip the first checkpoint's bytes: --verify must say so and exit 1.
    const first = join(ckpt, done.runId, "checkpoints", doc.checkpoints[0]!.name);
    const file = readdirSync(first, { recursive: true, encoding: "utf8" }).map((f) => join(first, f)).find((f) => !f.endsWith("manifest.json") && statSync(f).isFile())!;
    appendFileSync(file, "x");
    const corrupt = await cli(["checkpoints", done.runId, "--verify", "--json"]);
    expect(corrupt.code).toBe(1);
    const after = JSON.parse(corrupt.out) as { checkpoints: { verified: { ok: boolean } }[] };
    expect(after.checkpoints.map((c) => c.verified.ok)).toEqual([false, true, true]);
  });

  it("cancel on an ended run reports it and exits 0", async () => {
    const { code, out } = await cli(["cancel", done.runId, "--json"]);
    expect(code).toBe(0);
    expect(JSON.parse(out)).toMatchObject({ runId: done.runId, alreadyEnded: true, status: "succeeded" });
  });
});

describe("errors and exit codes", () => {
  it("an unknown run id is exit 3 with RUN_NOT_FOUND, on stderr or as JSON on stdout", async () => {
    for (const command of ["logs", "attach", "checkpoints", "cancel"]) {
      const plain = await cli([command, UNKNOWN]);
      expect(plain.code).toBe(3);
      expect(plain.out).toBe("");
      expect(plain.err).toMatch(new RegExp(`^runctl: No run ${UNKNOWN} in .* \\(RUN_NOT_FOUND\\)\\n$`));
      const json = await cli([command, UNKNOWN, "--json"]);
      expect(json.code).toBe(3);
      expect(json.err).toBe("");
      expect(JSON.parse(json.out)).toEqual({ schemaVersion: 1, error: { code: "RUN_NOT_FOUND", message: expect.stringContaining(UNKNOWN) } });
    }
  });

  it("a bad flag is exit 2", async () => {
    const { code, out, err } = await cli(["logs", UNKNOWN, "--tail", "5"]);
    expect(code).toBe(2);
    expect(out).toBe("");
    expect(err).toMatch(/\(USAGE\)/);
    expect((await cli(["cancel", UNKNOWN, "--strategy", "gently", "--json"])).code).toBe(2);
  });
});

describe("runctl plan and sweep", () => {
  it("plan examples/quickstart.ts --json shows the steps and the estimate; the human form too", async () => {
    const { code, out, err } = await cli(["plan", "examples/quickstart.ts", "--json"]);
    expect(err).toBe("");
    expect(code).toBe(0);
    const doc = JSON.parse(out) as { script: string; plan: { provider: string; steps: string[]; resources: unknown[]; sync: { files: number }; checkpoints: { keep: number }; estimate: { hourlyUsd: number; maxTotalUsd: number | null } } };
    expect(doc.script).toBe("train.py");
    expect(doc.plan.provider).toBe("local");
    expect(doc.plan.steps[0]).toBe("provision a machine from local");
    expect(doc.plan.steps).toContain("train train.py");
    expect(doc.plan.sync.files).toBeGreaterThan(0);
    expect(doc.plan.checkpoints.keep).toBe(3);
    expect(doc.plan.estimate).toMatchObject({ hourlyUsd: 0, maxDurationMs: null, maxTotalUsd: null });

    const human = await cli(["plan", "examples/quickstart.ts"]);
    expect(human.code).toBe(0);
    expect(human.out).toContain("plan: train.py on local\nsteps:\n  1. provision a machine from local\n");
    expect(human.out).toContain("resources: none created\n");
    expect(human.out).toMatch(/estimate: \$0\.0000\/h; expected total unknown/);

    const missing = await cli(["plan", "examples/nope.ts"]);
    expect(missing.code).toBe(2);
    const notAPlan = await cli(["plan", "examples/attach.ts", "--json"]);
    expect(notAPlan.code).toBe(2);
    expect(JSON.parse(notAPlan.out)).toEqual({ schemaVersion: 1, error: { code: "INVALID_ARGUMENT", message: expect.stringContaining("must export plan") } });
  });

  it("sweep renders found/deleted/kept/errors from the SDK's report; --dry-run and --json reach it; no AWS involved", async () => {
    const requests: SweepRequest[] = [];
    const r = (id: string, reason: string) => ({ kind: id.startsWith("i-") ? ("instance" as const) : ("volume" as const), id, runId: "20261121-152117-utfo5u", owner: "ml", reason });
    const fake: SweepFn = async (request) => {
      requests.push(request);
      const report: SweepReport = {
        dryRun: request.dryRun,
        found: [r("i-0aaa", "expired 2h ago"), r("vol-0bbb", "its run ended")],
        deleted: request.dryRun ? [] : [r("i-0aaa", "expired 2h ago")],
        kept: [{ resource: r("vol-0keep", "persistent"), reason: "persistent volume" }],
        errors: request.dryRun ? [] : [{ resource: r("vol-0bbb", "its run ended"), message: "VolumeInUse: attached to i-0ccc" }],
      };
      return report;
    };

    const dry = await cli(["sweep", "--dry-run", "--region", "eu-west-1", "--json"], { sweep: fake });
    expect(dry.code).toBe(0);
    expect(dry.err).toBe("");
    const doc = JSON.parse(dry.out) as SweepReport & { schemaVersion: number };
    expect(doc).toMatchObject({ schemaVersion: 1, dryRun: true, deleted: [], errors: [] });
    expect(doc.found.map((f) => f.id)).toEqual(["i-0aaa", "vol-0bbb"]);
    expect(requests[0]).toMatchObject({ dryRun: true, force: false, region: "eu-west-1", owner: undefined });
    expect(requests[0]!.signal).toBeInstanceOf(AbortSignal);

    const real = await cli(["sweep", "--owner", "all", "--force"], { sweep: fake });
    expect(requests[1]).toMatchObject({ dryRun: false, force: true, region: undefined, owner: "all" });
    expect(real.code).toBe(1); // one deletion failed
    expect(real.out).toMatch(/^FOUND \(2\)\n {2}KIND\s+ID\s+RUN\s+OWNER\s+REASON\n {2}instance\s+i-0aaa\s+20261121-152117-utfo5u\s+ml\s+expired 2h ago\n/);
    expect(real.out).toMatch(/DELETED \(1\)\n {2}KIND.*\n {2}instance\s+i-0aaa/);
    expect(real.out).toMatch(/KEPT \(1\)\n {2}KIND\s+ID\s+RUN\s+OWNER\s+WHY KEPT\n {2}volume\s+vol-0keep\s+.*persistent volume\n/);
    expect(real.out).toMatch(/ERRORS \(1\)\n.*\n {2}volume\s+vol-0bbb\s+.*VolumeInUse: attached to i-0ccc\n/);
    expect(real.err).toMatch(/1 resources could not be deleted/);

    const human = await cli(["sweep", "--dry-run"], { sweep: fake });
    expect(human.out).toMatch(/^WOULD DELETE \(2\)\n/);
    expect(human.out).not.toContain("DELETED");

    // Without an injected sweep the SDK's runs; with no region anywhere (no --region, nothing in the
    // ledger, no AWS_REGION) it refuses before any AWS call, and never reports a silent success.
    const saved = { region: process.env["AWS_REGION"], defaultRegion: process.env["AWS_DEFAULT_REGION"], home: process.env["RUNCTL_HOME"] };
    delete process.env["AWS_REGION"];
    delete process.env["AWS_DEFAULT_REGION"];
    process.env["RUNCTL_HOME"] = tempDir("cli-empty-home"); // an empty ledger: no region to sweep
    try {
      const noRegion = await cli(["sweep", "--dry-run", "--json"]);
      expect(noRegion.code).toBe(2);
      expect(JSON.parse(noRegion.out)).toEqual({ schemaVersion: 1, error: { code: "USAGE", message: expect.stringMatching(/--region/) } });
      const human = await cli(["sweep", "--dry-run"]);
      expect(human.code).toBe(2);
      expect(human.err).toMatch(/^runctl: sweep: no region to sweep .*--region\. \(USAGE\)$/m);
      expect(human.err).not.toContain("runctl: runctl");
    } finally {
      if (saved.region !== undefined) process.env["AWS_REGION"] = saved.region;
      if (saved.defaultRegion !== undefined) process.env["AWS_DEFAULT_REGION"] = saved.defaultRegion;
      if (saved.home !== undefined) process.env["RUNCTL_HOME"] = saved.home;
    }
  });
});

describe("runctl as its own process, on live runs", () => {
  it("the bin under tsx: --version from package.json, ls --json lists the finished run", async () => {
    const version = await spawnCli(["--version"], "npx").done;
    expect(version.code).toBe(0);
    expect(version.out).toBe(`${(JSON.parse(readFileSync(join(repo, "package.json"), "utf8")) as { version: string }).version}\n`);
    const ls = await spawnCli(["ls", "--json"]).done;
    expect(ls.code).toBe(0);
    const doc = JSON.parse(ls.out) as { runs: { runId: string; status: string }[] };
    expect(doc.runs.find((r) => r.runId === done.runId)?.status).toBe("succeeded");
  });

  it("logs RUN -f on a running run prints every line live and ends when the run ends, exit 0", async () => {
    const { run, lines, finished } = startRun({ lr: 0.5, steps: 40, "sleep-per-step": 0.05, "checkpoint-every": 20 });
    const follower = spawnCli(["logs", run.runId, "-f"]);
    const outcome = await follower.done;
    const result = await finished;
    expect(result.status).toBe("succeeded");
    expect(outcome.code).toBe(0);
    expect(outcome.out).toBe(lines.map((l) => `${l}\n`).join(""));
    expect(outcome.err).toContain(`runctl: run ${run.runId} succeeded (code 0)`);
  });

  it("Ctrl-C on logs -f exits 130 and leaves the run going; cancel RUN then ends it canceled, trainer gone", async () => {
    const { run, lines, finished } = startRun({ lr: 0.5, steps: 4000, "sleep-per-step": 0.05, "checkpoint-every": 0 });
    await until("training output", () => lines.some((l) => l.startsWith("RUNCTL_METRIC")));

    const follower = spawnCli(["logs", run.runId, "-f"]);
    let exited: (Outcome & { signal: NodeJS.Signals | null }) | undefined;
    void follower.done.then((o) => (exited = o));
    await until("the follower's first lines", () => follower.out().includes("RUNCTL_METRIC") || exited !== undefined);
    expect(exited, `the follower ended early: ${exited?.err}`).toBeUndefined();
    follower.child.kill("SIGINT");
    const interrupted = await follower.done;
    expect(interrupted.code).toBe(130);
    expect(interrupted.err).toContain("it goes on");

    const listed = JSON.parse((await cli(["ls", "--json"])).out) as { runs: { runId: string; status: string }[] };
    expect(listed.runs.find((r) => r.runId === run.runId)?.status).toBe("running");

    const cancel = await spawnCli(["cancel", run.runId, "--json"]).done;
    expect(cancel.err).toBe("");
    expect(cancel.code).toBe(0);
    expect(JSON.parse(cancel.out)).toMatchObject({ runId: run.runId, strategy: "interrupt", alreadyEnded: false, status: "canceled" });
    const result = await finished;
    expect(result.status).toBe("canceled");
    expect(lines.some((l) => l.startsWith("SIGTERM_CHECKPOINT"))).toBe(true);
    expect(lines).not.toContain("TRAINING_DONE");
    expect(await leftovers(run.runId)).toEqual([]);
  });

  it("cancel --strategy kill: SIGKILL at once, human report on stdout", async () => {
    const { run, lines, finished } = startRun({ lr: 0.5, steps: 4000, "sleep-per-step": 0.05, "checkpoint-every": 0 });
    await until("training output", () => lines.some((l) => l.startsWith("RUNCTL_METRIC")));
    const cancel = await spawnCli(["cancel", run.runId, "--strategy", "kill"]).done;
    expect(cancel.code).toBe(0);
    expect(cancel.out).toMatch(new RegExp(`^run ${run.runId} canceled \\(SIGKILL\\) after `));
    expect(cancel.err).toContain("SIGKILL sent");
    const result = await finished;
    expect(result).toMatchObject({ status: "canceled", signal: "SIGKILL" });
    expect(await leftovers(run.runId)).toEqual([]);
  });
});
