import { posix } from "node:path";
import { ensureAgent } from "../agent/install-agent.js";
import { CommandError, throwIfAborted } from "../errors/runctl-error.js";
import type { Machine } from "../providers/types.js";
import { buildAgentSpec, type AgentNodes, type AgentSpec } from "./agent-spec.js";
import { provisionMachineFor } from "./provisioning.js";
import type { RunContext } from "./run-context.js";
import type { LaunchedRun } from "./run-session.js";
import { machineSecretsFor, runStorages } from "./run-storage.js";
import { adoptStandby, type Standby } from "./standby.js";
import { stageCode } from "./staging.js";

/** A provisioned machine with the agent installed and the code staged: ready to launch on. */
export interface PreparedMachine {
  readonly machine: Machine;
  readonly agent: { readonly python: string; readonly path: string };
  readonly mirrorDir: string | null;
}

/** Installs the agent and stages the code on a provisioned machine. */
export async function prepareMachine(ctx: RunContext, machine: Machine, signal: AbortSignal, node?: number): Promise<PreparedMachine> {
  const agent = await ensureAgent(machine, { signal });
  const mirrorDir = await stageCode(ctx, machine, agent, signal, node);
  return { machine, agent, mirrorDir };
}

/** What differs between the agents of one attempt: the resume source, the gang, the storage, the price. */
export interface AgentLaunch {
  readonly resumeFrom: AgentSpec["resume"];
  readonly nodes?: AgentNodes | undefined;
  /** Commit checkpoints on this machine (only one node of a gang does). @defaultValue true */
  readonly commits?: boolean | undefined;
  /** Price per hour the money budget runs down at (a gang's: every node's). @defaultValue the machine's */
  readonly hourlyUsd?: number | undefined;
}

/** Builds the machine's spec and starts its agent; secrets travel only on the launch command's stdin. */
export async function startAgent(ctx: RunContext, prepared: PreparedMachine, launch: AgentLaunch, signal: AbortSignal): Promise<LaunchedRun> {
  const { spec, runId } = ctx;
  const { machine, agent, mirrorDir } = prepared;
  const runDir = posix.join(machine.rootDir, "runs", runId);
  const workdir = spec.sync || !machine.sharesLocalFilesystem ? posix.join(runDir, "code") : process.cwd();
  const agentSpec = buildAgentSpec({
    spec,
    runId,
    rootDir: machine.rootDir,
    workdir,
    mirrorDir,
    // In a container the trainer runs the image's interpreter, not the one found on the machine.
    python: spec.python ?? (spec.container ? "python3" : machine.python),
    storage: launch.commits === false ? null : (ctx.checkpoints?.descriptor ?? null),
    resume: launch.resumeFrom,
    imds: machine.imds,
    shutdown: machine.shutdown,
    cost: { hourlyUsd: launch.hourlyUsd ?? machine.hourlyPriceUsd, spentUsd: ctx.session.meter.usd() },
    nodes: launch.nodes,
  });
  const secrets = await machineSecretsFor(runStorages(ctx), machine.transport.stdinLeavesCopy === true, signal);
  throwIfAborted(signal);
  const argv = [agent.python, agent.path, "launch", runDir];
  // Secrets travel only on the launch command's stdin, and only where it leaves no copy (never
  // over SSM); the agent keeps them in memory.
  const started = await machine.transport.exec(argv, { stdin: JSON.stringify(secrets ? { ...agentSpec, secrets } : agentSpec) });
  if (started.exitCode !== 0) {
    throw new CommandError(
      { command: argv.join(" "), host: machine.address, exitCode: started.exitCode, signal: started.signal, durationMs: started.durationMs, stdoutTail: started.stdoutTail, stderrTail: started.stderrTail },
      { code: "AGENT_FAILED" },
    );
  }
  return { machine, agentPath: agent.path, agentPython: agent.python, runDir };
}

/**
 * One attempt on one machine: provisions it, installs the agent, stages the code, and starts the
 * agent there with the run's spec; `ctx.launched` is set once it runs. A standby prepared during a
 * spot notice is used instead when it is ready (else the machine is provisioned now). A cancel that
 * arrived meanwhile is applied at once.
 */
export async function launch(ctx: RunContext, resumeFrom: AgentSpec["resume"], standby?: Standby): Promise<LaunchedRun> {
  const { session, journal } = ctx;
  const signal = ctx.prelaunch.signal;
  session.emit({ type: "phase", phase: "provisioning" });
  const prepared = (await adoptStandby(ctx, standby)) ?? (await prepareMachine(ctx, await provisionMachineFor(ctx, signal), signal));
  const launched = await startAgent(ctx, prepared, { resumeFrom }, signal);
  journal.update({ runDir: launched.runDir, agentPath: launched.agentPath, agentPython: launched.agentPython });
  ctx.launched = launched;
  ctx.gang = [launched];
  if (ctx.cancelRequested) await session.signal(launched, ctx.cancelRequested);
  return launched;
}
