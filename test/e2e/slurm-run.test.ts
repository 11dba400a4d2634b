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
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Runctl, isRunctlError, slurm, type RunEvent, type SshHost } from "runctl";
import { main as slurmExample, type SlurmExampleOutcome } from "../../examples/slurm.js";
import { startSlurmCluster, type SlurmCluster } from "../support/slurm.js";
import { inspectorOf, sshHostOf } from "../support/ssh-hosts.js";
import { useTempRunctlHome } from "../support/temp-home.js";
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
});
