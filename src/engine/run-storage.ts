import { RunctlError } from "../errors/runctl-error.js";
import type { Machine, Provider } from "../providers/types.js";
import { machineCheckpointStorage } from "../storage/resolve-storage.js";
import type { MachineSecrets, Storage } from "../storage/types.js";
import { machineSecretsOver } from "../transport/secrets-channel.js";
import type { RunContext } from "./run-context.js";
import { storageOf } from "./run-spec.js";

/**
 * Checkpoint storage in runctl's folder on the machine, for machines with no storage configured.
 *
 * @example
 * ```ts
 * const store = machineStorageFor(sshHosts({ hosts }), machine);
 * ```
 */
export function machineStorageFor(provider: Provider, machine: Pick<Machine, "record" | "rootDir" | "id">): Storage {
  const connect = provider.transportFor;
  if (!connect) throw new RunctlError("UNSUPPORTED", `The ${provider.name} provider cannot open a transport to ${machine.id}.`);
  return machineCheckpointStorage(() => connect(machine.record), machine.rootDir, `${provider.name}://${machine.id}`);
}

/** Every storage the machine reaches for this run: checkpoints, `.data()` storages, outputs. */
export function runStorages(ctx: RunContext): (Storage | undefined)[] {
  const { spec, resources } = ctx;
  return [ctx.checkpoints?.storage, ...spec.data.map((d) => (d.kind === "storage" ? storageOf(resources, d.storage) : undefined)), spec.outputs ? storageOf(resources, spec.outputs) : undefined];
}

/**
 * The first credentials any of the run's storages hands to machines (docs/agent-protocol.md, S3).
 * None over a transport whose stdin leaves a copy (SSM): the machine uses its instance profile,
 * and a storage that insists on forwarding is refused (UNSUPPORTED).
 */
export async function machineSecretsFor(storages: readonly (Storage | undefined)[], stdinLeavesCopy: boolean, signal: AbortSignal): Promise<MachineSecrets | undefined> {
  for (const storage of storages) {
    const secrets = await machineSecretsOver(storage, stdinLeavesCopy, "the launch", { signal });
    if (secrets) return secrets;
  }
  return undefined;
}
