import type { Machine } from "../providers/types.js";
import { descriptorFor } from "../storage/resolve-storage.js";
import type { RunContext } from "./run-context.js";
import { machineStorageFor } from "./run-storage.js";

/**
 * Provisions the machine for one attempt (the caller has reported the `provisioning` phase) (avoiding the machines this run lost), records it in the
 * journal and the cost meter, and, when no checkpoint storage is configured and the provider can
 * reach its machines later, chooses storage on the machine itself (with a warning).
 */
export async function provisionMachineFor(ctx: RunContext, signal: AbortSignal, gang?: { readonly rank: number; readonly size: number }): Promise<Machine> {
  const { spec, resources, session, journal } = ctx;
  const provider = resources.provider;
  const maxDurationMs = spec.budget.maxDurationMs;
  const machine = await provider.provision(
    { runId: ctx.runId, ...(ctx.lostMachines.length > 0 ? { avoid: [...ctx.lostMachines] } : {}), ...(maxDurationMs !== null ? { maxDurationMs } : {}), gang },
    { signal },
  );
  ctx.machine = machine;
  journal.update({ machine: machine.record });
  session.meter.start(machine.id, machine.hourlyPriceUsd, machine.launchedAtMs ?? Date.now());
  if (!ctx.checkpoints && provider.transportFor) {
    // No storage configured: commit on the machine itself, readable through its transport.
    const onMachine = machineStorageFor(provider, machine);
    const descriptor = descriptorFor(onMachine, provider);
    ctx.checkpoints = { storage: onMachine, descriptor };
    journal.update({ storage: { uri: onMachine.uri, descriptor } });
    session.emit({
      type: "warning",
      code: "CHECKPOINTS_ON_MACHINE",
      message: provider.batch
        ? `No checkpoint storage configured: checkpoints are committed on the cluster's shared filesystem under ${onMachine.uri} (read through ${machine.address}). Configure .checkpoints({ storage }) to keep them elsewhere.`
        : `No checkpoint storage configured: checkpoints are committed on ${machine.address} under ${onMachine.uri} and are lost with the machine. Configure .checkpoints({ storage }) to keep them elsewhere.`,
    });
  }
  return machine;
}
