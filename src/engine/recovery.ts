import type { Provider } from "../providers/types.js";
import type { FollowOutcome } from "./follow-run.js";
import type { FollowOptions, LaunchedRun } from "./run-session.js";
import type { RunSpec } from "./run-spec.js";

/** How a started run is followed: its metric pattern, cleanup, and when a silent machine counts as lost. */
export function followOptionsFor(spec: RunSpec): FollowOptions {
  const recover = spec.recover;
  return {
    metricPattern: spec.metricPattern ? new RegExp(spec.metricPattern.source, spec.metricPattern.flags) : undefined,
    cleanup: spec.cleanup,
    lostAfterMs: recover && recover.onEvents.includes("host-lost") ? recover.hostLostAfterMs : undefined,
  };
}

/** Why a followed run should restart on a new machine, or undefined to conclude it. */
export function restartReason(spec: RunSpec, outcome: FollowOutcome): string | undefined {
  const recover = spec.recover;
  if (!recover) return undefined;
  const on = recover.onEvents;
  if (outcome.kind === "host-lost" && on.includes("host-lost")) return `lost the machine (${outcome.message})`;
  if (outcome.kind === "end" && outcome.exit.status === "interrupted" && on.includes("interruption")) {
    // A cluster's scheduler preempted or requeued the job (the agent says `preempted`), else a spot notice.
    return outcome.exit.reason === "preempted" ? "preempted or requeued by the scheduler" : "spot interruption";
  }
  if (outcome.kind === "end" && outcome.exit.status === "failed" && outcome.exit.exitCode !== null && recover.retryOnExitCodes.includes(outcome.exit.exitCode)) {
    return `trainer exited with code ${outcome.exit.exitCode}`;
  }
  return undefined;
}

/** The provider's view of a run's machine (`running`, `terminated`, ...), `unknown` when it cannot tell within 15 s. */
export async function machineState(provider: Provider, run: LaunchedRun): Promise<string> {
  return (await provider.describe?.(run.machine, { signal: AbortSignal.timeout(15_000) }).catch(() => "unknown")) ?? "unknown";
}
