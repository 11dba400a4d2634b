import type { Machine, Provider } from "../providers/types.js";
import type { RunEventInput } from "../run/events.js";
import type { RunResult } from "../run/run-result.js";
import { relayAgentLog } from "./agent-log.js";
import type { AgentSpec } from "./agent-spec.js";
import { followRun, type FollowOutcome } from "./follow-run.js";
import { prepareMachine, startAgent } from "./launch.js";
import { provisionMachineFor } from "./provisioning.js";
import { machineState } from "./recovery.js";
import type { RunContext } from "./run-context.js";
import type { FollowOptions, LaunchedRun } from "./run-session.js";

/**
 * One attempt of a multi-node run (docs/multi-node.md): `count` machines as one gang, all or
 * nothing (a gang that cannot be completed gives back what it got), every agent started with its
 * rank, rank 0's address and every node's address. Only `checkpointsFromNode` commits checkpoints;
 * every node restores the same one. `ctx.launched` is node 0's run, `ctx.gang` all of them.
 */
export async function launchGang(ctx: RunContext, resumeFrom: AgentSpec["resume"]): Promise<LaunchedRun[]> {
  const { spec, session, journal, resources } = ctx;
  const nodes = spec.nodes!;
  const signal = ctx.prelaunch.signal;
  session.emit({ type: "phase", phase: "provisioning" });
  const provider = resources.provider;
  const request = { runId: ctx.runId, ...(ctx.lostMachines.length > 0 ? { avoid: [...ctx.lostMachines] } : {}), maxDurationMs: spec.budget.maxDurationMs ?? undefined };
  const settled = await Promise.allSettled(
    Array.from({ length: nodes.count }, async (_, rank) => {
      const gang = { rank, size: nodes.count };
      const machine = rank === 0 ? await provisionMachineFor(ctx, signal, gang) : await provider.provision({ ...request, gang }, { signal });
      if (rank !== 0) session.meter.start(machine.id, machine.hourlyPriceUsd, machine.launchedAtMs ?? Date.now());
      ctx.gangMachines.push(machine);
      return machine;
    }),
  );
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed) throw failed.reason; // start-run releases ctx.gangMachines
  const machines = settled.map((s) => (s as PromiseFulfilledResult<Machine>).value);
  const prepared = await Promise.all(machines.map((m, rank) => prepareMachine(ctx, m, signal, rank)));
  // The nodes talk to each other inside their network (on EC2 the private addresses, which the gang's
  // security group admits), not over the addresses the client reaches them at.
  const addrs = machines.map((m) => m.privateAddress ?? m.address);
  const hourlyUsd = machines.reduce((sum, m) => sum + m.hourlyPriceUsd, 0);
  const started = await Promise.allSettled(
    prepared.map((p, rank) =>
      startAgent(
        ctx,
        p,
        {
          resumeFrom,
          commits: rank === nodes.checkpointsFromNode,
          hourlyUsd,
          nodes: { rank, count: nodes.count, procsPerNode: nodes.procsPerNode, masterAddr: addrs[0]!, masterPort: nodes.masterPort, addrs, launcher: nodes.launcher },
        },
        signal,
      ),
    ),
  );
  const notStarted = started.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (notStarted) {
    // Half a gang never trains: the agents that did start are killed before their machines go back.
    await Promise.all(started.map((s) => (s.status === "fulfilled" ? session.signal(s.value, "kill").catch(() => {}) : undefined)));
    throw notStarted.reason;
  }
  const runs = started.map((s) => (s as PromiseFulfilledResult<LaunchedRun>).value);
  const first = runs[0]!;
  journal.update({ runDir: first.runDir, agentPath: first.agentPath, agentPython: first.agentPython, nodes: machines.map((m) => m.record) });
  ctx.launched = first;
  ctx.gang = runs;
  if (ctx.cancelRequested) await Promise.all(runs.map((r) => session.signal(r, ctx.cancelRequested!).catch(() => {})));
  return runs;
}

/** How following a whole attempt ended: the outcome that decides the run, and the node it came from. */
export interface AttemptOutcome {
  readonly outcome: FollowOutcome;
  /** The deciding node's rank (0 on one machine). */
  readonly rank: number;
  /** Every node's outcome, by rank. */
  readonly all: readonly FollowOutcome[];
}

const failing = (o: FollowOutcome): boolean => o.kind !== "detached" && !(o.kind === "end" && o.exit.status === "succeeded");

/**
 * How much an outcome explains the gang's end: a lost machine or a spot notice is the cause when a
 * peer's trainer also failed (it lost its peer); a dead agent next; then a trainer's own failure.
 */
function causeRank(o: FollowOutcome): number {
  if (o.kind === "host-lost" || (o.kind === "end" && o.exit.status === "interrupted")) return 4;
  if (o.kind === "lost") return 3;
  if (o.kind === "end" && o.exit.status === "failed") return 2;
  return failing(o) ? 1 : 0;
}

/**
 * Follows every node of an attempt. A node that ends badly (a non-zero exit, a lost agent or machine)
 * or gets a spot notice stops the gang: every other node gets SIGTERM (its agent escalates to SIGKILL
 * after the grace, so a torchrun stuck on a dead peer is not waited for). Once every node has ended,
 * the outcome that best explains the end decides the run (a lost machine or a spot notice over a
 * peer's failure it caused, the earliest among equals; a node the gang stopped never decides);
 * without a failure, node 0's outcome does.
 */
export async function followAttempt(ctx: RunContext, runs: readonly LaunchedRun[], options: FollowOptions, provider: Provider): Promise<AttemptOutcome> {
  const { session } = ctx;
  let decided: { outcome: FollowOutcome; rank: number } | undefined;
  let stopping = false;
  const ended = new Set<number>();
  const stopped = new Set<number>(); // nodes the gang stopped: their end is a consequence, not a cause
  const stopGang = (rank: number, why: string): void => {
    if (runs.length === 1 || stopped.size > 0) return;
    const others = runs.map((_, i) => i).filter((i) => i !== rank && !ended.has(i));
    session.emit({ type: "warning", code: "GANG_STOPPING", node: rank, message: `Node ${rank} (${runs[rank]!.machine.address}) ${why}: stopping the other ${others.length} node(s).` });
    for (const i of others) {
      stopped.add(i);
      void session.signal(runs[i]!, "interrupt").catch(() => {});
    }
  };
  const memberOptions = (rank: number): FollowOptions => ({
    ...options,
    node: runs.length > 1 ? rank : undefined,
    // A spot notice on any node: the whole gang stops now, so node 0 can still save.
    onEvent: (event) => {
      options.onEvent?.(event);
      if (event.type === "interruption") stopGang(rank, `got a spot notice (${event.reason})`);
    },
  });
  const all = await Promise.all(
    runs.map(async (run, rank) => {
      const outcome = await followMember(ctx, run, rank, memberOptions(rank), provider);
      ended.add(rank);
      const consequence = stopped.has(rank) && outcome.kind === "end" && outcome.exit.status === "canceled";
      if (failing(outcome) && !consequence) {
        if (!decided || causeRank(outcome) > causeRank(decided.outcome)) decided = { outcome, rank };
        if (!stopping) {
          stopping = true;
          stopGang(rank, describe(outcome));
        }
      }
      return outcome;
    }),
  );
  if (decided) return { ...decided, all };
  return { outcome: all[0]!, rank: 0, all };
}

/** Follows one node; a machine that is unreachable while its provider says it runs is waited for. */
async function followMember(ctx: RunContext, run: LaunchedRun, rank: number, options: FollowOptions, provider: Provider): Promise<FollowOutcome> {
  const { session } = ctx;
  const once = (): Promise<FollowOutcome> => (rank === 0 ? session.follow(run, options, provider) : followOtherNode(ctx, run, rank, options));
  let outcome = await once();
  while (outcome.kind === "host-lost" && (await machineState(provider, run)) === "running") {
    session.emit({ type: "warning", code: "STILL_RUNNING", node: options.node, message: `${run.machine.address} is unreachable but its provider reports it running; still waiting for it.` });
    outcome = await once();
  }
  return outcome;
}

/**
 * Follows a node other than 0: its log lines and warnings join the run's stream tagged with its
 * rank (its phases, checkpoints and metrics are node 0's business); the journal's cursor stays node 0's.
 */
function followOtherNode(ctx: RunContext, run: LaunchedRun, rank: number, options: FollowOptions): Promise<FollowOutcome> {
  const { session } = ctx;
  return followRun({
    machine: run.machine,
    agentPath: run.agentPath,
    agentPython: run.agentPython,
    runDir: run.runDir,
    start: { log: 0, events: 0 },
    emit: (event: RunEventInput) => {
      if (event.type === "log" || event.type === "warning") session.emit({ ...event, node: rank });
      else if (event.type === "interruption") session.emit({ type: "warning", code: "INTERRUPTION", node: rank, message: `Node ${rank}: ${event.reason}` });
      options.onEvent?.(event);
    },
    metricPattern: undefined,
    signal: session.followAbort.signal,
    lostAfterMs: options.lostAfterMs,
    onReconnect: (error, attempt) =>
      session.emit({ type: "warning", code: "RECONNECTING", node: rank, message: `Lost the connection to node ${rank} (${run.machine.address}): ${error.message}; reconnecting (attempt ${attempt}).` }),
  });
}

function describe(outcome: FollowOutcome): string {
  switch (outcome.kind) {
    case "end":
      return outcome.error ? `failed (${outcome.error.code}: ${outcome.error.message})` : `ended ${outcome.exit.status} (${outcome.exit.exitCode !== null ? `exit code ${outcome.exit.exitCode}` : (outcome.exit.signal ?? outcome.exit.reason)})`;
    case "lost":
      return `lost its agent (${outcome.message})`;
    case "host-lost":
      return `was lost (${outcome.message})`;
    default:
      return "stopped being followed";
  }
}

/**
 * Settles an attempt: every node but the deciding one is cleaned up (a dead agent's processes
 * reaped) and released, then the deciding node's outcome becomes the run's result, its message
 * naming the node in a gang.
 */
export async function concludeAttempt(ctx: RunContext, runs: readonly LaunchedRun[], ended: AttemptOutcome, options: FollowOptions, provider: Provider, statusOverride?: "interrupted"): Promise<RunResult> {
  const { session } = ctx;
  const decider = runs[ended.rank]!;
  if (runs.length > 1 && ended.outcome.kind !== "detached") {
    await Promise.all(
      runs.map(async (run, rank) => {
        if (rank === ended.rank) return;
        const outcome = ended.all[rank];
        if (outcome?.kind === "detached") return;
        if (outcome?.kind === "lost") await session.reapOrphans(run);
        await relayAgentLog(run.machine, run.runDir, provider.logger);
        if (options.cleanup && outcome?.kind === "end") await session.removeRunDir(run);
        await session.release(run, provider);
      }),
    );
  }
  const label = runs.length > 1 ? `node ${ended.rank} (${decider.machine.address})` : undefined;
  return session.conclude(decider, provider, ended.outcome, options, statusOverride, label);
}

/** Gives back every machine of an attempt that is being restarted. */
export async function releaseAttempt(ctx: RunContext, runs: readonly LaunchedRun[], provider: Provider): Promise<void> {
  await Promise.all(runs.map((run) => ctx.session.release(run, provider)));
}
