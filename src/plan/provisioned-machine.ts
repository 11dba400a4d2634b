import { ensureAgent } from "../agent/install-agent.js";
import type { Machine, Provider } from "../providers/types.js";
import { syncTree, type SyncResult, type SyncTreeOptions } from "../sync/sync-tree.js";
import type { Command, ExecHandle, ExecOptions } from "../transport/types.js";
import type { SyncOptions } from "./plan-types.js";
import { existingDir } from "./validate.js";
import { syncHashCachePath } from "../util/runctl-home.js";

/**
 * A machine you drive yourself: run commands, move files, sync a folder, release it.
 * `await using` releases it when the scope ends.
 *
 * @example
 * ```ts
 * await using m = await Runctl.instance(local()).provision();
 * const { stdout } = await m.exec(["python3", "-c", "print(42)"]);
 * await m.sync("./project", `${m.rootDir}/work/project`);
 * ```
 */
export interface ProvisionedMachine extends Machine {
  /** Runs a command on the machine (see Transport.exec). */
  exec(command: Command, options?: ExecOptions): ExecHandle;
  /** Makes `remoteDir` an exact, verified copy of `localDir` (content manifest; only changes travel). */
  sync(localDir: string, remoteDir: string, options?: SyncOptions & { readonly signal?: AbortSignal | undefined; readonly staging?: SyncTreeOptions["staging"] | undefined }): Promise<SyncResult>;
  /** Copies a file to the machine. */
  putFile(localPath: string, remotePath: string, options?: { readonly signal?: AbortSignal | undefined }): Promise<void>;
  /** Copies a file from the machine. */
  getFile(remotePath: string, localPath: string, options?: { readonly signal?: AbortSignal | undefined }): Promise<void>;
  /** Gives the machine back to its provider (terminates cloud instances). Idempotent. */
  release(): Promise<void>;
  /** Same as `release()`. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Provisions a machine and wraps it as a {@link ProvisionedMachine}. */
export async function provisionMachine(provider: Provider, options: { readonly signal?: AbortSignal | undefined }): Promise<ProvisionedMachine> {
  const runId = `manual-${Date.now().toString(36)}`;
  const machine = await provider.provision({ runId }, options);
  let released: Promise<void> | undefined;
  const release = (): Promise<void> => (released ??= provider.release(machine));
  return {
    ...machine,
    exec: (command, execOptions) => machine.transport.exec(command, execOptions),
    async sync(localDir, remoteDir, syncOptions = {}) {
      const agent = await ensureAgent(machine, { signal: syncOptions.signal });
      const dir = existingDir(localDir);
      return syncTree({
        transport: machine.transport,
        python: agent.python,
        agentPath: agent.path,
        localDir: dir,
        remoteDir,
        ignore: syncOptions.ignore ?? [],
        hashCachePath: syncHashCachePath(dir),
        staging: syncOptions.staging,
        maxBytes: syncOptions.maxBytes,
        maxFiles: syncOptions.maxFiles,
        signal: syncOptions.signal,
      });
    },
    putFile: (localPath, remotePath, o) => machine.transport.putFile(localPath, remotePath, o),
    getFile: (remotePath, localPath, o) => machine.transport.getFile(remotePath, localPath, o),
    release,
    [Symbol.asyncDispose]: release,
  };
}
