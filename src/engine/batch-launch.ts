import { posix } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { agentPathOn } from "../agent/install-agent.js";
import { RunctlError } from "../errors/runctl-error.js";
import type { BatchEngine, BatchJobRequest, BatchJobStatus } from "../providers/batch-types.js";
import type { Machine } from "../providers/types.js";
import { buildAgentSpec, type AgentSpec } from "./agent-spec.js";
import type { FollowOutcome } from "./follow-run.js";
import type { AttemptOutcome } from "./gang.js";
import { prepareMachine } from "./launch.js";
import { provisionMachineFor } from "./provisioning.js";
import type { RunContext } from "./run-context.js";
import type { LaunchedRun } from "./run-session.js";

/** A run's batch job on a cluster engine (`ctx.batch`). */
export interface BatchRunState {
  /** The login machine: its transport reaches the shared filesystem and the scheduler. */
  readonly login: Machine;
  readonly agent: { readonly python: string; readonly path: string };
  readonly mirrorDir: string | null;
  /** `<root>/runs/<runId>` on the shared filesystem. */
  readonly jobDir: string;
  /** The job submitted for the run (a new one only when the last is over). */
  jobId: string | undefined;
  /** The attempt being (or last) followed: the job and its restart count. */
  attempt: { readonly jobId: string; readonly restarts: number } | undefined;
}

const engineOf = (ctx: RunContext): BatchEngine => {
  const engine = ctx.resources.provider.batch;
  if (!engine) throw new RunctlError("UNSUPPORTED", `The ${ctx.resources.provider.name} provider has no batch scheduler.`);
  return engine;
};

function jobRequest(ctx: RunContext, login: Machine, agent: { readonly python: string; readonly path: string }): BatchJobRequest {
  const { spec } = ctx;
  return {
    runId: ctx.runId,
    jobDir: posix.join(login.rootDir, "runs", ctx.runId),
    nodes: spec.nodes?.count ?? 1,
    python: agent.python,
    agentPath: agent.path,
    maxDurationMs: spec.budget.maxDurationMs ?? undefined,
    graceMs: spec.graceMs,
    requeue: spec.recover !== undefined,
  };
}

/**
 * One attempt of a run on a batch provider (docs/slurm.md). The first time: the login machine, the
 * scheduler's verdict on the job (before anything is synced), the agent and the code on the shared
 * filesystem, `job.json`, and the job. Later attempts follow the same job once the scheduler has
 * requeued it (it resumes on its own), or submit a new one when the last is over. Returns once every
 * node's agent runs: one {@link LaunchedRun} per node, in the attempt's own folders.
 */
export async function launchBatch(ctx: RunContext, resumeFrom: AgentSpec["resume"]): Promise<LaunchedRun[]> {
  const { session, journal } = ctx;
  const engine = engineOf(ctx);
  const signal = ctx.prelaunch.signal;
  if (!ctx.batch) {
    session.emit({ type: "phase", phase: "provisioning" });
    const login = await provisionMachineFor(ctx, signal);
    const checked = await engine.check(login, jobRequest(ctx, login, { python: login.python, path: agentPathOn(login.rootDir) }), { signal });
    for (const message of checked.warnings) session.emit({ type: "warning", code: "SCHEDULER", message });
    const prepared = await prepareMachine(ctx, login, signal);
    ctx.batch = { login, agent: prepared.agent, mirrorDir: prepared.mirrorDir, jobDir: posix.join(login.rootDir, "runs", ctx.runId), jobId: undefined, attempt: undefined };
  }
  const b = ctx.batch;
  const request = jobRequest(ctx, b.login, b.agent);
  let status = await requeuedJob(ctx, engine, b, signal);
  if (!status) {
    await writeJobFile(ctx, b, resumeFrom, signal);
    b.jobId = await engine.submit(b.login, request, { signal });
    journal.update({ machine: { ...b.login.record, jobId: b.jobId, jobDir: b.jobDir } });
  }
  const jobId = b.jobId!;
  for (;;) {
    const started = await waitForStart(ctx, engine, b, jobId, status, signal);
    const attempt = `${jobId}.${started.restarts}`;
    const runs = Array.from({ length: request.nodes }, (_, rank) => ({
      machine: engine.nodeMachine(b.login, started.hosts[rank] ?? `node ${rank}`, rank, jobId),
      agentPath: b.agent.path,
      agentPython: b.agent.python,
      runDir: posix.join(b.jobDir, "attempts", attempt, `node${rank}`),
    }));
    const again = await waitForAgents(ctx, engine, b, jobId, started.restarts, runs, signal);
    if (again) {
      status = again; // requeued before its agents started: wait for the next attempt
      continue;
    }
    b.attempt = { jobId, restarts: started.restarts };
    const first = runs[0]!;
    journal.update({ runDir: first.runDir, agentPath: first.agentPath, agentPython: first.agentPython });
    ctx.launched = first;
    ctx.gang = runs;
    if (ctx.cancelRequested) await session.signal(first, ctx.cancelRequested);
    return runs;
  }
}

/**
 * The job's status once it is past `completing` (a requeued job shows COMPLETING until its steps
 * and epilog have ended, and only then whether it is pending again or over), or after `maxMs`.
 */
async function settledStatus(engine: BatchEngine, b: BatchRunState, jobId: string, signal?: AbortSignal, maxMs = 60_000): Promise<BatchJobStatus> {
  const deadline = Date.now() + maxMs;
  for (;;) {
    const status = await engine.status(b.login, jobId, signal ? { signal } : {});
    if (status.phase !== "completing" || Date.now() >= deadline) return status;
    await sleep(1000, undefined, signal ? { signal } : {});
  }
}

/** The run's job when the scheduler has queued it again after the attempt just followed; undefined when a new job is needed. */
async function requeuedJob(ctx: RunContext, engine: BatchEngine, b: BatchRunState, signal: AbortSignal): Promise<BatchJobStatus | undefined> {
  if (!b.jobId || !b.attempt) return undefined;
  let status = await settledStatus(engine, b, b.jobId, signal);
  if (status.phase === "running" && status.restarts === b.attempt.restarts) {
    // The attempt's agents are gone while its job runs on: the same job starts afresh.
    await engine.requeue(b.login, b.jobId, { signal }).catch(() => undefined);
    status = await settledStatus(engine, b, b.jobId, signal);
  }
  const queued = (status.phase === "pending" || status.phase === "running") && status.restarts > b.attempt.restarts;
  if (queued) return status;
  // Never two jobs of one run: one not over is cancelled before another is submitted.
  if (status.phase !== "ended" && status.phase !== "gone") await engine.cancel(b.login, b.jobId, { signal }).catch(() => undefined);
  return undefined;
}

/** Writes `job.json`: the agent's spec for a placeholder node folder, which each node's agent rebases onto its own. */
async function writeJobFile(ctx: RunContext, b: BatchRunState, resumeFrom: AgentSpec["resume"], signal: AbortSignal): Promise<void> {
  const { spec, runId } = ctx;
  const specRunDir = posix.join(b.jobDir, "attempts", "_", "node_");
  const agentSpec = buildAgentSpec({
    spec,
    runId,
    rootDir: b.login.rootDir,
    runDir: specRunDir,
    workdir: posix.join(specRunDir, "code"),
    mirrorDir: b.mirrorDir,
    python: spec.python ?? b.login.python,
    storage: ctx.checkpoints?.descriptor ?? null,
    resume: resumeFrom,
    imds: undefined,
    cost: { hourlyUsd: 0, spentUsd: 0 },
  });
  const nodes = spec.nodes;
  const job = {
    version: 1,
    spec: agentSpec,
    specRunDir,
    nodes: nodes ? { count: nodes.count, procsPerNode: nodes.procsPerNode, masterPort: nodes.masterPort, launcher: nodes.launcher } : null,
    commitsRank: nodes?.checkpointsFromNode ?? 0,
    // A job the scheduler requeues resumes on its own, from the run's newest verified checkpoint.
    restartResume: spec.recover && ctx.checkpoints ? { storage: ctx.checkpoints.descriptor, runId, name: null } : null,
  };
  const r = await b.login.transport.exec(["sh", "-c", 'umask 077 && mkdir -p -- "$1" && cat > "$1/job.json.tmp" && mv -f -- "$1/job.json.tmp" "$1/job.json"', "sh", b.jobDir], {
    stdin: JSON.stringify(job),
    signal,
  });
  if (r.exitCode !== 0) throw new RunctlError("COMMAND_FAILED", `Could not write ${b.jobDir}/job.json on ${b.login.address}: ${r.stderrTail.trim()}`);
}

/**
 * Waits while the job is queued: a `queued` phase with the job's id first (even when it starts at
 * once), then again for each new reason it waits for. Returns it running, or over.
 */
async function waitForStart(ctx: RunContext, engine: BatchEngine, b: BatchRunState, jobId: string, known: BatchJobStatus | undefined, signal: AbortSignal): Promise<BatchJobStatus> {
  let lastReason: string | null = null;
  let status = known ?? (await engine.status(b.login, jobId, { signal }));
  for (;;) {
    const reason = status.phase === "pending" ? (status.reason ?? "") : "";
    if (reason !== lastReason) {
      lastReason = reason;
      ctx.session.emit({ type: "phase", phase: "queued", job: jobId, ...(reason ? { reason } : {}) });
    }
    if (status.phase === "running" || status.phase === "ended" || status.phase === "gone") return status;
    await sleep(engine.pollMs, undefined, { signal });
    status = await engine.status(b.login, jobId, { signal });
  }
}

/** How long a running job may take to start runctl's agent on every node. */
const AGENT_START_TIMEOUT_MS = 120_000;

/**
 * Waits until every node's agent has started (its `agent.pid`). A job that ends first, or runs for
 * {@link AGENT_START_TIMEOUT_MS} without every agent (one node could not start it: no interpreter,
 * no shared filesystem), failed to start its agents: AGENT_FAILED with the job's output (the job is
 * then cancelled with the run). Returns the job's status when the scheduler requeued it meanwhile,
 * undefined once every agent runs.
 */
async function waitForAgents(ctx: RunContext, engine: BatchEngine, b: BatchRunState, jobId: string, restarts: number, runs: readonly LaunchedRun[], signal: AbortSignal): Promise<BatchJobStatus | undefined> {
  const dirs = runs.map((r) => r.runDir);
  const started = async (): Promise<boolean> => {
    const r = await b.login.transport.exec(["sh", "-c", 'for d; do [ -e "$d/agent.pid" ] || exit 1; done', "sh", ...dirs], { signal });
    return r.exitCode === 0;
  };
  const poll = Math.min(500, engine.pollMs);
  let runningSince: number | undefined;
  for (;;) {
    if (await started()) return undefined;
    const status = await engine.status(b.login, jobId, { signal });
    if (status.restarts > restarts && status.phase !== "ended" && status.phase !== "gone") return status;
    runningSince = status.phase === "running" ? (runningSince ?? Date.now()) : undefined;
    const timedOut = runningSince !== undefined && Date.now() - runningSince >= AGENT_START_TIMEOUT_MS;
    if (status.phase === "ended" || status.phase === "gone" || timedOut) {
      if (await started()) return undefined; // they ran and ended between the two looks
      const tail = await engine.outputTail(b.login, b.jobDir, jobId, { signal }).catch(() => "");
      const what = timedOut ? `has run for ${AGENT_START_TIMEOUT_MS / 1000} s without runctl's agent on every node` : `ended (${status.state}${status.exitCode ? `, exit ${status.exitCode}` : ""}) before runctl's agent started on every node`;
      throw new RunctlError("AGENT_FAILED", `Slurm job ${jobId} ${what}.${tail.trim() ? ` Its output ends with:\n${tail.trim()}` : ""}`, {
        details: { jobId, state: status.state, outputTail: tail },
      });
    }
    await sleep(poll, undefined, { signal });
  }
}

/**
 * An attempt's end as the scheduler explains it. A node's agent reports any SIGTERM without a
 * runctl stop marker as `interrupted` (preempted), and an agent killed outright is `lost`: the
 * job's state says what happened. Requeued (preemption, `scontrol requeue`, a node failure) is an
 * interruption the run recovers from; cancelled by someone else is `canceled`; the time limit is
 * MAX_DURATION_EXCEEDED.
 */
export async function explainBatchEnd(ctx: RunContext, ended: AttemptOutcome): Promise<AttemptOutcome> {
  const b = ctx.batch;
  const o = ended.outcome;
  const interrupted = o.kind === "end" && o.exit.status === "interrupted";
  const lost = o.kind === "lost" || o.kind === "host-lost";
  if (!b?.attempt || (!interrupted && !lost)) return ended;
  const engine = engineOf(ctx);
  const status = await settledStatus(engine, b, b.attempt.jobId).catch(() => undefined);
  if (!status) return ended;
  const durationMs = o.kind === "end" ? o.exit.durationMs : 0;
  const exit = (s: "interrupted" | "canceled" | "failed", reason: string): FollowOutcome => ({ kind: "end", exit: { status: s, exitCode: null, signal: null, durationMs, reason }, error: undefined });
  const requeued = (status.restarts > b.attempt.restarts && status.phase !== "ended") || ["PREEMPTED", "NODE_FAIL", "REQUEUED", "REQUEUE_HOLD"].includes(status.state);
  let outcome: FollowOutcome | undefined;
  if (requeued) {
    if (lost) {
      ctx.session.emit({ type: "warning", code: "JOB_REQUEUED", message: `Slurm requeued job ${b.attempt.jobId} (${status.state}${status.reason ? `, ${status.reason}` : ""}); its agents could not record their end.` });
      outcome = exit("interrupted", "preempted");
    }
  } else if (status.state === "CANCELLED" && !ctx.session.cancelRequested) {
    ctx.session.emit({ type: "warning", code: "JOB_CANCELLED", message: `Slurm job ${b.attempt.jobId} was cancelled outside runctl (scancel).` });
    outcome = exit("canceled", "cancel");
  } else if (status.state === "TIMEOUT" || status.state === "DEADLINE") {
    outcome = exit("failed", "max-duration");
  } else if (lost && o.kind === "lost") {
    // Say what Slurm says of it (OUT_OF_MEMORY, FAILED, NODE_FAIL without a requeue) and what the job printed.
    const tail = await engine.outputTail(b.login, b.jobDir, b.attempt.jobId).catch(() => "");
    outcome = { ...o, message: `${o.message}; Slurm job ${b.attempt.jobId} is ${status.state}${status.exitCode ? ` (exit ${status.exitCode})` : ""}${tail.trim() ? `, its output ends with: ${tail.trim().split("\n").slice(-5).join(" | ")}` : ""}` };
  }
  if (!outcome) return ended;
  return { ...ended, outcome, all: ended.all.map((a, i) => (i === ended.rank ? outcome! : a)) };
}

/**
 * Ends the run's part on the cluster once the run is settled: unless the client only detached, the
 * job folder is marked `ended` (what `sweep` reads) and a job still queued or running after its
 * agents ended is cancelled (a requeue after the run's end must not train unsupervised). Then the
 * login connection closes. Failures here leave the job to `runctl sweep` (it is in the ledger).
 */
export async function endBatchJob(ctx: RunContext, keepJob: boolean): Promise<void> {
  const b = ctx.batch;
  if (!b) return;
  const engine = engineOf(ctx);
  try {
    if (!keepJob && b.jobId) {
      await b.login.transport.exec(["sh", "-c", ': > "$1/ended"', "sh", b.jobDir]);
      const deadline = Date.now() + 15_000;
      for (;;) {
        const s = await engine.status(b.login, b.jobId);
        if (s.phase === "ended" || s.phase === "gone") break;
        // Running or completing: its agents have ended and the job is finishing (srun, the batch
        // script's exit, the epilog), or it is being requeued, which the cancel stops.
        if (s.phase === "pending" || Date.now() >= deadline) {
          await engine.cancel(b.login, b.jobId);
          break;
        }
        await sleep(500);
      }
    }
  } catch (err) {
    process.emitWarning(`runctl: could not end Slurm job ${b.jobId ?? "?"} of run ${ctx.runId}: ${(err as Error).message}; \`runctl sweep\` will.`, "RunctlWarning");
  } finally {
    await ctx.resources.provider.release(b.login).catch(() => {});
  }
}
