import { RunctlError } from "../errors/runctl-error.js";
import type { MachineSecrets, Storage, StorageCallOptions } from "../storage/types.js";

/**
 * Refuses a storage that insists on forwarding this client's credentials (`forwardCredentials:
 * true`) to a machine whose stdin leaves a copy (SSM stages it in S3, and SendCommand parameters
 * stay in the command history): the keys would be written where they outlive the run.
 *
 * @throws RunctlError UNSUPPORTED naming the storage and the fix.
 * @example
 * ```ts
 * refuseStoredSecrets(s3("s3://b/ckpt", { forwardCredentials: true }), true, ".checkpoints()"); // throws
 * ```
 */
export function refuseStoredSecrets(storage: Storage | undefined, stdinLeavesCopy: boolean, where: string): void {
  if (!stdinLeavesCopy || storage?.forwardCredentials !== true) return;
  throw new RunctlError(
    "UNSUPPORTED",
    `${where}: ${storage.uri} has forwardCredentials: true, but this machine is reached over SSM, whose input is stored in S3 and in the command history; runctl never writes credentials there. Let the machine use its instance profile (grant it access to ${storage.uri}) and leave forwardCredentials unset or false.`,
    { details: { storage: storage.uri } },
  );
}

/**
 * The credentials a storage hands to a machine, as far as the channel allows: over a private
 * channel (a pipe, an SSH channel) what {@link Storage.machineSecrets} gives; over a channel that
 * leaves a copy, none (the machine uses its own, an instance profile), and UNSUPPORTED when the
 * storage insists ({@link refuseStoredSecrets}).
 *
 * @example
 * ```ts
 * const secrets = await machineSecretsOver(storage, transport.stdinLeavesCopy === true, "the launch", { signal });
 * ```
 */
export async function machineSecretsOver(storage: Storage | undefined, stdinLeavesCopy: boolean, where: string, options: StorageCallOptions = {}): Promise<MachineSecrets | undefined> {
  if (!storage) return undefined;
  refuseStoredSecrets(storage, stdinLeavesCopy, where);
  if (stdinLeavesCopy) return undefined;
  return storage.machineSecrets?.(options);
}
