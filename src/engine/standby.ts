import type { Machine } from "../providers/types.js";
import type { RunEventInput } from "../run/events.js";
import { ensureAgent } from "../agent/install-agent.js";
import type { PreparedMachine } from "./launch.js";
import type { RunContext } from "./run-context.js";
import { stageCode } from "./staging.js";

/**
 * A replacement machine prepared while an interrupted attempt still saves: provisioned, the agent
 * installed and the code staged, nothing started on it. The run's own trainer starts there only
 * after the interrupted attempt has ended (see {@link adoptStandby}).
 */
export interface Standby {
  /** The prepared machine and the events held back; undefined when preparing failed or was discarded (the run then provisions as usual). */
  readonly ready: Promise<{ readonly prepared: PreparedMachine; readonly held: readonly RunEventInput[] } | undefined>;
  /** Stops preparing and gives back whatever was provisioned; the standby cannot be adopted afterwards. */
  discard(): Promise<void>;
}

/**
 * Whether a spot notice may start a replacement now: a single-machine run that recovers from
 * interruptions, has restarts left and storage to resume from, on a provider that can hand out a
 * second machine while the first is still held (a gang restarts whole; a batch job, a one-host
 * pool or this machine cannot).
 */
export function canPrepareAhead(ctx: RunContext, restarts: number): boolean {
  const { spec, resources } = ctx;
  const provider = resources.provider;
  const recover = spec.recover;
  if (!recover || !recover.onEvents.includes("interruption") || restarts >= recover.maxRestarts) return false;
  if (spec.nodes || provider.batch || !ctx.checkpoints) return false;
  return provider.maxNodes === undefined || provider.maxNodes > 1;
}

/**
 * Starts preparing a replacement for `current` (avoided, with the machines this run lost). Events it
 * would report (`syncing`, `sync`, sync warnings) are held back and reported when it is adopted, so
 * the run's phases stay in order. A failure is a warning, and the run provisions after the attempt
 * ends as it would have without a standby.
 */
export function prepareStandby(ctx: RunContext, current: Machine): Standby {
  const { session, resources, spec } = ctx;
  const provider = resources.provider;
  const abort = new AbortController();
  let machine: Machine | undefined;
  let released = false;
  const held: RunEventInput[] = [];

  const release = async (): Promise<void> => {
    if (!machine || released) return;
    released = true;
    await provider.release(machine).catch((err: unknown) => {
      session.emit({ type: "warning", code: "RELEASE_FAILED", message: `Could not release the replacement ${machine!.address}: ${(err as Error).message}` });
    });
    session.meter.stop(machine.id);
  };

  const prepare = async (): Promise<{ prepared: PreparedMachine; held: RunEventInput[] } | undefined> => {
    try {
      const maxDurationMs = spec.budget.maxDurationMs;
      machine = await provider.provision(
        { runId: ctx.runId, avoid: [...new Set([...ctx.lostMachines, current.id])], ...(maxDurationMs !== null ? { maxDurationMs } : {}) },
        { signal: abort.signal },
      );
      // It costs from now on, whether or not it is used.
      session.meter.start(machine.id, machine.hourlyPriceUsd, machine.launchedAtMs ?? Date.now());
      if (abort.signal.aborted) throw abort.signal.reason;
      const agent = await ensureAgent(machine, { signal: abort.signal });
      const mirrorDir = await stageCode(ctx, machine, agent, abort.signal, undefined, (event) => held.push(event));
      if (abort.signal.aborted) throw abort.signal.reason;
      session.emit({
        type: "warning",
        code: "REPLACEMENT_READY",
        message: `Spot notice: replacement ${machine.address} is provisioned and staged; the run resumes there from the final checkpoint once ${current.address} has ended.`,
      });
      return { prepared: { machine, agent, mirrorDir }, held };
    } catch (err) {
      await release();
      if (!abort.signal.aborted) {
        session.emit({ type: "warning", code: "REPLACEMENT_FAILED", message: `Could not prepare a replacement for ${current.address} ahead (${(err as Error).message}); provisioning one after the attempt ends.` });
      }
      return undefined;
    }
  };

  // A cancel before the next trainer starts stops the preparing too.
  const onCancel = (): void => abort.abort();
  ctx.prelaunch.signal.addEventListener("abort", onCancel, { once: true });
  const ready = prepare().finally(() => ctx.prelaunch.signal.removeEventListener("abort", onCancel));
  return {
    ready,
    async discard() {
      abort.abort();
      await ready;
      await release();
    },
  };
}

/**
 * Makes a prepared standby the machine of the next attempt, after the interrupted one has ended:
 * recorded in the journal as the run's machine, and the events held back while preparing reported
 * now (after `provisioning`). Undefined when there is none to adopt.
 */
export async function adoptStandby(ctx: RunContext, standby: Standby | undefined): Promise<PreparedMachine | undefined> {
  const ready = standby ? await standby.ready : undefined;
  if (!ready) return undefined;
  const { prepared, held } = ready;
  ctx.machine = prepared.machine;
  ctx.journal.update({ machine: prepared.machine.record });
  for (const event of held) ctx.session.emit(event);
  return prepared;
}
