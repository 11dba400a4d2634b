import { join, posix } from "node:path";
import { RunctlError } from "../errors/runctl-error.js";
import { runctlHome } from "../util/runctl-home.js";
import { localDir } from "./local-dir/local-dir-storage.js";
import { machineDir } from "./machine-dir/machine-dir-storage.js";
// The only import of S3 code outside src/storage/s3 and the public entries: the lazy forms load the
// AWS SDK on first use, so the root entry `runctl` stays light (docs/decisions/0013-subpath-entries.md).
import { lazyS3 as s3, lazyS3FromDescriptor as s3FromDescriptor } from "./s3/s3-lazy.js";
import type { MachineShell, Storage, StorageDescriptor } from "./types.js";

/**
 * The one place that maps URIs and descriptors to concrete storages (the plan, `startRun` and
 * `attachRun` all go through it). Everything else sees only the {@link Storage} interface.
 */

/**
 * Whether a URI names a remote storage rather than a path (`.data()` takes paths on the machine).
 *
 * @example
 * ```ts
 * isStorageUri("s3://bucket/mnist"); // true
 * isStorageUri("/datasets/mnist");   // false
 * ```
 */
export function isStorageUri(uri: string): boolean {
  return uri.startsWith("s3://");
}

/**
 * The storage a plan call names by URI: `s3://bucket/prefix` with the default credential chain,
 * anything else a local folder (a path or `file://` URI).
 *
 * @example
 * ```ts
 * storageFromUri("s3://bucket/outputs"); // s3(...)
 * storageFromUri("./outputs");           // localDir("./outputs")
 * ```
 */
export function storageFromUri(uri: string): Storage {
  return isStorageUri(uri) ? s3(uri) : localDir(uri);
}

/**
 * Where checkpoints of machines that share this filesystem go when none is configured:
 * `$RUNCTL_HOME/checkpoints` (read at call time).
 *
 * @example
 * ```ts
 * defaultCheckpointStorage().uri; // "file:///home/me/.runctl/checkpoints"
 * ```
 */
export function defaultCheckpointStorage(): Storage {
  return localDir(join(runctlHome(), "checkpoints"));
}

/**
 * Checkpoint storage in runctl's folder on a machine (`<rootDir>/checkpoints`), reached through a
 * connection `connect` opens per call: for remote machines with no storage configured.
 *
 * @param connect - Opens a connection to the machine (any `Transport`).
 * @param rootDir - runctl's root folder on the machine.
 * @param label - The machine in the URI (`ssh-hosts://gpu-1`).
 * @example
 * ```ts
 * machineCheckpointStorage(() => provider.transportFor!(record), "/home/ml/.runctl", "ssh-hosts://gpu-1");
 * ```
 */
export function machineCheckpointStorage(connect: () => MachineShell, rootDir: string, label: string): Storage {
  return machineDir(connect, posix.join(rootDir, "checkpoints"), label);
}

/**
 * A storage rebuilt from what a journal recorded: S3 from its descriptor (default credential
 * chain), a local folder from its path, and a folder on a machine via `onMachine` (which knows the
 * provider), or undefined when there is no way back to it.
 *
 * @example
 * ```ts
 * storageFromRecord({ uri: "s3://b/ckpt", descriptor }, () => undefined);
 * ```
 */
export function storageFromRecord(saved: { readonly uri: string; readonly descriptor: StorageDescriptor }, onMachine: (dirOnMachine: string) => Storage | undefined): Storage | undefined {
  const descriptor = saved.descriptor;
  if (descriptor.kind === "s3") return s3FromDescriptor(descriptor);
  if (saved.uri.startsWith("file:")) return localDir(descriptor.path);
  return onMachine(descriptor.path);
}

/**
 * How machines of a provider reach `storage` (the descriptor written into `spec.json`);
 * STORAGE_UNREACHABLE when they cannot (a local folder seen from a remote host).
 *
 * @example
 * ```ts
 * descriptorFor(s3("s3://b/ckpt"), { name: "ec2", sharesLocalFilesystem: false }); // { kind: "s3", ... }
 * ```
 */
export function descriptorFor(storage: Storage, provider: { readonly name: string; readonly sharesLocalFilesystem: boolean }): StorageDescriptor {
  const descriptor = storage.machineDescriptor?.({ sharesLocalFilesystem: provider.sharesLocalFilesystem });
  if (!descriptor) throw new RunctlError("STORAGE_UNREACHABLE", `Machines of the ${provider.name} provider cannot reach ${storage.uri}.`);
  return descriptor;
}
