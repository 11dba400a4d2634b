/**
 * The `slurm()` provider against a real cluster (test/support/slurm.ts: slurmctld and a slurmd in
 * each of two namespace test hosts, Debian's Slurm 22.05), through examples/slurm.ts:
 * - the quickstart trainer as a 1-node job: metrics, checkpoints that verify, the job COMPLETED;
 * - a failing script: the job FAILED with the trainer's exit code, the run `failed` with it;
 * - the multi-node example's DDP trainer as one 2-node job: identical weights on both ranks;
 * - `scontrol requeue` mid-run: SIGTERM reaches the trainer, its checkpoint is committed, and the
 *   requeued job resumes from it, ending with the weights of an uninterrupted run;
 * - cancel: `canceled`, its SIGTERM checkpoint committed, the job gone from the queue;
 * - the time limit: Slurm's warning stops the trainer and its final checkpoint is committed;
 * - an unknown partition and an invalid gres: JOB_REJECTED with Slurm's message, nothing synced;
 * - `.plan()` shows the sbatch script; detach, `Runctl.attach`, and `sweep` (only runctl's own jobs).
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import { Runctl, isRunctlError, slurm, type RunEvent, type SshHost } from "runctl";
import { main as slurmExample, type SlurmExampleOutcome } from "../../examples/slurm.js";
import { startSlurmCluster, type SlurmCluster } from "../support/slurm.js";
import { inspectorOf, sshHostOf } from "../support/ssh-hosts.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";
import { buildDemoWheel } from "../support/wheelhouse.js";
import { leaseTestHosts, type HostLease } from "../testbed/inject.js";
import type { SshTransport } from "../../src/transport/ssh/index.js";

useTempRunctlHome("e2e-slurm");
const FIXTURES = fileURLToPath(new URL("../fixtures/trainers/", import.meta.url));
let lease: HostLease;
let cluster: SlurmCluster;
let login: SshHost;
let inspector: SshTransport;

beforeAll(async () => {
  lease = await leaseTestHosts(2);
  // KillWait 20 s: room for the trainer's SIGTERM checkpoint and its commit when Slurm requeues.
  cluster = await startSlurmCluster(lease.hosts, { killWaitS: 20 });
  login = await sshHostOf(lease.hosts[0]!);
  inspector = await inspectorOf(lease.hosts[0]!);
}, 300_000);
afterAll(async () => {
  await inspector?.close();
  await cluster?.stop();
  await lease?.release();
});

const quiet = { verbose: false } as const;
const metricSteps = (events: readonly RunEvent[]): number[] => events.flatMap((e) => (e.type === "metric" && e.step !== undefined ? [e.step] : []));
const jobIdOf = (events: readonly RunEvent[]): string => {
  const job = events.find((e): e is Extract<RunEvent, { type: "phase" }> => e.type === "phase" && e.job !== undefined)?.job;
  if (job) return job;
  throw new Error("no queued phase with the job id");
};
/** The job's `scontrol` record, as root on the controller. */
const jobRecord = async (id: string): Promise<Record<string, string> | undefined> => cluster.job(id);
/** `FINAL_STEP N weights_sha256=…` of the run's last line of that kind, by node. */
const finalShas = (outcome: SlurmExampleOutcome): Map<number | undefined, string> => {
  const shas = new Map<number | undefined, string>();
  for (const { node, line } of outcome.lines) {
    const m = /^FINAL_STEP \d+ weights_sha256=([0-9a-f]{64})$/.exec(line);
    if (m) shas.set(node, m[1]!);
  }
  return shas;
};

describe("slurm(): runs as Slurm batch jobs", () => {
  it("trains the quickstart as a 1-node job: metrics, verified checkpoints, the job COMPLETED", async () => {
    const outcome = await slurmExample({ login, ...quiet });
    const { result, events, latest, verification } = outcome;
    expect(result.status, JSON.stringify(result.error)).toBe("succeeded");
    expect(result.exitCode).toBe(0);
    expect(metricSteps(events)).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    expect(outcome.lines.some((l) => l.line === "TRAINING_DONE")).toBe(true);
    expect(events.filter((e) => e.type === "checkpoint").map((e) => (e as { step: number | null }).step)).toEqual([20, 40, 60]);
    expect(latest?.step).toBe(60);
    expect(verification?.ok).toBe(true);
    const phases = events.flatMap((e) => (e.type === "phase" ? [e.phase] : []));
    expect(phases).toEqual(expect.arrayContaining(["provisioning", "syncing", "queued", "training", "done"]));
    const record = await jobRecord(jobIdOf(events));
    expect(record).toMatchObject({ JobState: "COMPLETED", ExitCode: "0:0", JobName: `runctl-${outcome.runId}` });
    expect(record?.["Comment"]?.trim()).toBe(`runctl:${outcome.runId}`);
  });

  it("reports a failing script as failed with its exit code; the job is FAILED with it", async () => {
    const outcome = await slurmExample({ login, ...quiet, project: FIXTURES, script: "train_mnist_e2e.py", hyperparams: { steps: 20, "fail-at-step": 5 } });
    expect(outcome.result.status).toBe("failed");
    expect(outcome.result.exitCode).toBe(3);
    expect(outcome.result.error?.code).toBe("TRAINING_FAILED");
    const record = await jobRecord(jobIdOf(outcome.events));
    expect(record).toMatchObject({ JobState: "FAILED", ExitCode: "3:0" });
  });

  it("trains one DDP model as one 2-node job: the same weights on both ranks", async () => {
    const outcome = await slurmExample({ login, ...quiet, nodes: 2, project: FIXTURES, script: "train_ddp.py", hyperparams: { steps: 30, "checkpoint-every": 10 } });
    expect(outcome.result.status, JSON.stringify(outcome.result.error)).toBe("succeeded");
    const shas = finalShas(outcome);
    expect([...shas.keys()].sort()).toEqual([0, 1]);
    expect(shas.get(0)).toBe(shas.get(1));
    expect(outcome.lines.some((l) => l.node === 1 && l.line.startsWith("DDP_INFO rank=1 world_size=2"))).toBe(true);
    expect(outcome.verification?.ok).toBe(true);
    const record = await jobRecord(jobIdOf(outcome.events));
    expect(record).toMatchObject({ JobState: "COMPLETED", NumNodes: "2" });
  });

  it("installs requirements once into a venv on the shared filesystem that both nodes train in", async () => {
    const project = tempDir("slurm-setup-proj");
    buildDemoWheel("2.0.1", join(project, "wheels"));
    writeFileSync(join(project, "requirements.txt"), `# slurm ${Date.now()}-${process.pid}\nrunctl-demo-pkg==2.0.1\n`);
    writeFileSync(join(project, "use_pkg.py"), "import sys, runctl_demo_pkg\nprint('PKG', runctl_demo_pkg.VERSION)\nprint('PREFIX', sys.prefix)\n");
    const outcome = await slurmExample({ login, ...quiet, nodes: 2, project, script: "use_pkg.py", setup: { requirements: "requirements.txt", pip: { noIndex: true, findLinks: ["wheels"] } } });
    expect(outcome.result.status, JSON.stringify(outcome.result.error)).toBe("succeeded");
    const prefixes = new Map(outcome.lines.filter((l) => l.line.startsWith("PREFIX ")).map((l) => [l.node, l.line.slice(7)]));
    expect([...prefixes.keys()].sort()).toEqual([0, 1]);
    expect(prefixes.get(0)).toBe(prefixes.get(1)); // one venv, on the shared filesystem
    expect(prefixes.get(0)).toMatch(/\/\.runctl\/venvs\//);
    expect(outcome.lines.filter((l) => l.line === "PKG 2.0.1").map((l) => l.node).sort()).toEqual([0, 1]);
  });

  it("resumes a requeued job (scontrol requeue) from the checkpoint its SIGTERM committed", async () => {
    const hyperparams = { steps: 60, "checkpoint-every": 10, "sleep-per-step": 0.1 };
    const reference = await slurmExample({ login, ...quiet, project: FIXTURES, script: "train_mnist_e2e.py", hyperparams });
    expect(reference.result.status).toBe("succeeded");
    let requeued = false;
    let jobId: string | undefined;
    const outcome = await slurmExample({
      login,
      ...quiet,
      project: FIXTURES,
      script: "train_mnist_e2e.py",
      hyperparams,
      recover: { maxRestarts: 2 },
      graceMs: 10_000,
      onEvent: async (event) => {
        if (event.type === "phase" && event.job) jobId = event.job;
        if (!requeued && event.type === "metric" && (event.step ?? 0) >= 25) {
          requeued = true;
          const r = await cluster.scontrol(["requeue", jobId!]);
          expect(r.code, r.stderr).toBe(0);
        }
      },
    });
    expect(outcome.result.status, JSON.stringify(outcome.result.error)).toBe("succeeded");
    expect(outcome.result.restarts).toBe(1);
    const sigterm = outcome.lines.find((l) => l.line.startsWith("SIGTERM_CHECKPOINT"));
    expect(sigterm).toBeDefined();
    const savedAt = Number(sigterm!.line.split(" ")[1]);
    expect(savedAt).toBeGreaterThanOrEqual(25);
    const checkpoints = outcome.events.filter((e): e is Extract<RunEvent, { type: "checkpoint" }> => e.type === "checkpoint");
    expect(checkpoints.some((c) => c.step === savedAt)).toBe(true);
    const resumed = outcome.events.find((e): e is Extract<RunEvent, { type: "resumed" }> => e.type === "resumed");
    expect(resumed?.step).toBe(savedAt);
    expect(outcome.lines.some((l) => l.line === `RESUMED_FROM_STEP ${savedAt}`)).toBe(true);
    expect(outcome.result.interruptions[0]).toMatchObject({ resumedFromStep: savedAt, lostSteps: 0 });
    // The same job ran again (its restart count is the attempt's), and ends with an uninterrupted run's weights.
    expect((await jobRecord(jobIdOf(outcome.events)))?.["Restarts"]).toBe("1");
    expect(finalShas(outcome).get(undefined)).toBe(finalShas(reference).get(undefined));
    expect(outcome.verification?.ok).toBe(true);
  });

  it("cancels a running job: canceled, its SIGTERM checkpoint committed, the job gone from the queue", async () => {
    let canceled = false;
    const outcome = await slurmExample({
      login,
      ...quiet,
      project: FIXTURES,
      script: "train_mnist_e2e.py",
      hyperparams: { steps: 400, "checkpoint-every": 50, "sleep-per-step": 0.05 },
      graceMs: 10_000,
      onEvent: async (event, run) => {
        if (!canceled && event.type === "metric" && (event.step ?? 0) >= 15) {
          canceled = true;
          await run.cancel();
        }
      },
    });
    expect(outcome.result.status).toBe("canceled");
    const saved = outcome.lines.find((l) => l.line.startsWith("SIGTERM_CHECKPOINT"));
    expect(saved).toBeDefined();
    const step = Number(saved!.line.split(" ")[1]);
    expect(outcome.latest?.step).toBe(step);
    expect(outcome.verification?.ok).toBe(true);
    const id = jobIdOf(outcome.events);
    expect((await cluster.squeue(["-j", id, "-o", "%T"])).stdout.trim()).toBe("");
    expect((await jobRecord(id))?.["Restarts"]).toBe("0"); // never requeued
  });

  it("ends as canceled, never resubmitted, when someone else scancels the job", async () => {
    let jobId: string | undefined;
    let cancelled = false;
    const outcome = await slurmExample({
      login,
      ...quiet,
      project: FIXTURES,
      script: "train_mnist_e2e.py",
      hyperparams: { steps: 400, "checkpoint-every": 50, "sleep-per-step": 0.05 },
      graceMs: 10_000,
      recover: { maxRestarts: 2 },
      onEvent: async (event) => {
        if (event.type === "phase" && event.job) jobId = event.job;
        if (!cancelled && event.type === "metric" && (event.step ?? 0) >= 10) {
          cancelled = true;
          const r = await cluster.command("scancel", [jobId!]);
          expect(r.code, r.stderr).toBe(0);
        }
      },
    });
    expect(outcome.result.status).toBe("canceled");
    expect(outcome.result.restarts).toBe(0);
    expect(outcome.events.some((e) => e.type === "warning" && e.code === "JOB_CANCELLED")).toBe(true);
    expect(outcome.events.filter((e) => e.type === "phase" && e.job !== undefined).map((e) => (e as { job?: string }).job)).toEqual([jobId]);
    expect((await cluster.squeue(["-o", "%i"])).stdout.trim()).toBe("");
  });

  it("stops the trainer at Slurm's warning before the time limit; its final checkpoint is committed", async () => {
    const outcome = await slurmExample({
      login,
      ...quiet,
      project: FIXTURES,
      script: "train_mnist_e2e.py",
      hyperparams: { steps: 100_000, "checkpoint-every": 1000, "sleep-per-step": 0.05 },
      graceMs: 5_000,
      // Two minutes: slurmctld sends the warning at its first check within warning + 30 s of the
      // end, which for a one-minute limit can be before the trainer has started.
      maxDurationMs: 120_000,
    });
    expect(outcome.result.status).toBe("failed");
    expect(outcome.result.error?.code).toBe("MAX_DURATION_EXCEEDED");
    const saved = outcome.lines.find((l) => l.line.startsWith("SIGTERM_CHECKPOINT"));
    expect(saved).toBeDefined();
    expect(outcome.latest?.step).toBe(Number(saved!.line.split(" ")[1]));
    expect(outcome.verification?.ok).toBe(true);
    const id = jobIdOf(outcome.events);
    const record = await jobRecord(id);
    expect(record?.["TimeLimit"]).toBe("00:02:00");
    // Slurm's warning (the batch shell's USR1) stopped it, before the time limit killed anything.
    const out = await inspector.exec(["sh", "-c", 'cat "$HOME"/.runctl/runs/*/slurm-"$1".out', "sh", id]);
    expect(out.stdout).toContain("runctl: the time limit is near");
    expect(record?.["JobState"]).not.toBe("TIMEOUT");
  }, 180_000);

  it("refuses an unknown partition, an invalid gres and memory no node has with Slurm's message, before anything is synced or queued", async () => {
    for (const [cluster_, reason] of [[{ partition: "nope" }, "partition"], [{ gresPerNode: "gpu:1" }, "gres"], [{ sbatchArgs: ["--mem=100000000"] }, "nodes"]] as const) {
      const phases: string[] = [];
      let runId = "";
      const error: unknown = await slurmExample({ login, ...quiet, cluster: cluster_, onEvent: (e) => void (runId = e.runId, e.type === "phase" && phases.push(e.phase)) }).catch((err: unknown) => err);
      expect(isRunctlError(error) && error.code).toBe("JOB_REJECTED");
      expect((error as Error).message).toMatch(reason === "partition" ? /invalid partition/i : reason === "gres" ? /gres|generic resource/i : /node configuration/i);
      expect(isRunctlError(error) && error.details?.["reason"]).toBe(reason);
      expect(phases).not.toContain("syncing");
      expect(phases).not.toContain("queued");
      const dir = await inspector.exec(["sh", "-c", 'test -e "$HOME/.runctl/runs/$1"', "sh", runId]);
      expect(dir.exitCode).toBe(1);
    }
    expect((await cluster.squeue(["-o", "%i"])).stdout.trim()).toBe("");
  });

  it(".plan() shows the sbatch script and the job, connecting to nothing", async () => {
    const plan = Runctl.instance(slurm({ login: { host: "login.invalid", username: "ml" }, partition: "gpu", gresPerNode: "gpu:4", sbatchArgs: ["--constraint=a100"] }))
      .sync(FIXTURES)
      .nodes(2)
      .recover({ maxRestarts: 2 })
      .budget({ maxDurationMs: 3 * 3600_000 });
    const summary = await plan.plan("train_ddp.py", { graceMs: 60_000 });
    expect(summary.provider).toBe("slurm");
    const script = summary.batchScript ?? "";
    for (const line of ["#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --partition=gpu", "#SBATCH --gres=gpu:4", "#SBATCH --time=180", "#SBATCH --signal=B:USR1@90", "#SBATCH --requeue", "#SBATCH --open-mode=append", "#SBATCH --constraint=a100"]) {
      expect(script).toContain(line);
    }
    expect(script).toMatch(/^srun --nodes=2 .* node "\$job_dir" "\$attempt" "\$addrs" &$/m);
    expect(summary.steps.join("\n")).toMatch(/sbatch --test-only/);
    expect(summary.resources).toHaveLength(1);
    expect(summary.resources[0]?.kind).toBe("job");
  });

  it("detaches and reattaches (Runctl.attach); sweep cancels only runctl's jobs whose run is over", async () => {
    const provider = slurm({ login });
    // A job of the user's own, not runctl's: never touched.
    const foreign = await inspector.exec(["sbatch", "--parsable", "--comment=mine", "-o", "/dev/null", "--wrap", "sleep 300"]);
    expect(foreign.exitCode, foreign.stderrTail).toBe(0);
    const foreignId = foreign.stdout.trim();
    const run = Runctl.instance(provider)
      .sync(FIXTURES)
      .train("train_mnist_e2e.py", { hyperparams: { steps: 80, "checkpoint-every": 20, "sleep-per-step": 0.1 } });
    for await (const event of run) {
      if (event.type === "metric" && (event.step ?? 0) >= 5) {
        await run.cancel({ strategy: "detach" });
        break;
      }
    }
    expect((await run).status).toBe("detached");
    let report = await Runctl.sweep({ provider, dryRun: true });
    expect(report.found).toEqual([]);
    expect(report.kept.map((k) => [k.resource.kind, k.resource.runId, k.reason])).toEqual([["job", run.runId, "run not over"]]);
    const attached = Runctl.attach(run.runId, { provider });
    const lines: string[] = [];
    for await (const event of attached) if (event.type === "log") lines.push(event.line);
    const result = await attached;
    expect(result.status).toBe("succeeded");
    expect(lines).toContain("TRAINING_DONE");
    // A detached run whose client never came back: the sweep takes it once forced, and only it.
    const left = Runctl.instance(provider).sync(FIXTURES).train("train_mnist_e2e.py", { hyperparams: { steps: 5000, "sleep-per-step": 0.1 } });
    for await (const event of left) {
      if (event.type === "metric") {
        await left.cancel({ strategy: "detach" });
        break;
      }
    }
    await left;
    report = await Runctl.sweep({ provider, force: true });
    expect(report.deleted.map((r) => r.runId)).toEqual([left.runId]);
    expect(report.errors).toEqual([]);
    // Cancelled: out of the queue once Slurm has ended its processes.
    const deadline = Date.now() + 60_000;
    let queue: string[] = [];
    while (Date.now() < deadline) {
      queue = (await cluster.squeue(["-o", "%i"])).stdout.trim().split("\n");
      if (queue.length === 1) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(queue).toEqual([foreignId]);
    await cluster.command("scancel", [foreignId]);
  });
});

