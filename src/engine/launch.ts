import { posix } from "node:path";
import { ensureAgent } from "../agent/install-agent.js";
import { CommandError, throwIfAborted } from "../errors/runctl-error.js";
import { buildAgentSpec, type AgentSpec } from "./agent-spec.js";
import { provisionMachineFor } from "./provisioning.js";
import type { RunContext } from "./run-context.js";
import type { LaunchedRun } from "./run-session.js";
import { machineSecretsFor, runStorages } from "./run-storage.js";
import { stageCode } from "./staging.js";

/**
 * One attempt: provisions a machine, installs the agent, stages the code, and starts the agent
 * there with the run's spec; `ctx.launched` is set once it runs. A cancel that arrived meanwhile is
 * applied at once.
 */
export async function launch(ctx: RunContext, resumeFrom: AgentSpec["resume"]): Promise<LaunchedRun> {
  const { spec, session, journal, runId } = ctx;
  const signal = ctx.prelaunch.signal;
  session.emit({ type: "phase", phase: "provisioning" });
  const spentUsd = session.meter.usd();
  const machine = await provisionMachineFor(ctx, signal);
  const agent = await ensureAgent(machine, { signal });
  const runDir = posix.join(machine.rootDir, "runs", runId);
  const mirrorDir = await stageCode(ctx, machine, agent, signal);
  const workdir = spec.sync || !machine.sharesLocalFilesystem ? posix.join(runDir, "code") : process.cwd();
  const agentSpec = buildAgentSpec({
    spec,
    runId,
    rootDir: machine.rootDir,
    workdir,
    mirrorDir,
    // In a container the trainer runs the image's interpreter, not the one found on the machine.
    python: spec.python ?? (spec.container ? "python3" : machine.python),
    storage: ctx.checkpoints?.descriptor ?? null,
    resume: resumeFrom,
    imds: machine.imds,
    shutdown: machine.shutdown,
    cost: { hourlyUsd: machine.hourlyPriceUsd, spentUsd },
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
  journal.update({ runDir, agentPath: agent.path, agentPython: agent.python });
  const launched: LaunchedRun = { machine, agentPath: agent.path, agentPython: agent.python, runDir };
  ctx.launched = launched;
  if (ctx.cancelRequested) await session.signal(launched, ctx.cancelRequested);
  return launched;
}
