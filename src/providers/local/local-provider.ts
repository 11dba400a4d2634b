import { hostname } from "node:os";
import { join, resolve } from "node:path";
import { mkdir } from "node:fs/promises";
import { RunctlError, throwIfAborted } from "../../errors/runctl-error.js";
import { loggedTransport } from "../../transport/logged-transport.js";
import { localTransport } from "../../transport/local/local-transport.js";
import { sourceLogger, type RunctlLogger } from "../../util/logger.js";
import { runctlHome } from "../../util/runctl-home.js";
import type { Machine, MachineRecord, Provider } from "../types.js";

/** Options of {@link local}. */
export interface LocalProviderOptions {
  /** runctl's machine-side root folder. @defaultValue `$RUNCTL_HOME/local` */
  readonly rootDir?: string | undefined;
  /** Python 3 interpreter that runs the agent. @defaultValue `"python3"` */
  readonly python?: string | undefined;
  /** Debug output of the commands and file copies runctl runs here, and of the agent. @defaultValue undefined (silent) */
  readonly logger?: RunctlLogger | undefined;
}

/**
 * The embedded default provider: runs on this machine, needs no account, creates nothing.
 *
 * @example
 * ```ts
 * const run = Runctl.instance(local()).sync("./project").train("train.py");
 * ```
 */
export function local(options: LocalProviderOptions = {}): Provider {
  const log = sourceLogger(options.logger, "provider");
  const transportLog = sourceLogger(options.logger, "transport");
  const machineFor = (rootDir: string): Machine => {
    const record: MachineRecord = { provider: "local", id: "localhost", rootDir };
    return {
      id: "localhost",
      provider: "local",
      address: hostname(),
      transport: loggedTransport(localTransport(), transportLog),
      rootDir,
      python: options.python ?? "python3",
      sharesLocalFilesystem: true,
      tags: {},
      hourlyPriceUsd: 0,
      record,
    };
  };
  return {
    name: "local",
    ...(options.logger !== undefined ? { logger: options.logger } : {}),
    maxNodes: 1,
    sharesLocalFilesystem: true,
    async provision(_request, opts) {
      throwIfAborted(opts?.signal);
      const rootDir = resolve(options.rootDir ?? join(runctlHome(), "local"));
      await mkdir(rootDir, { recursive: true });
      log.info(`this machine, root ${rootDir}`, { rootDir });
      return machineFor(rootDir);
    },
    async release() {},
    async describe() {
      return "running";
    },
    transportFor() {
      return loggedTransport(localTransport(), transportLog);
    },
    async reattach(record) {
      if (record.provider !== "local" || typeof record["rootDir"] !== "string") {
        throw new RunctlError("INVALID_ARGUMENT", `The local provider cannot reattach a ${record.provider} machine.`);
      }
      return machineFor(record["rootDir"]);
    },
    plan() {
      return { resources: [], hourlyPriceUsd: 0 };
    },
    async doctor(opts) {
      throwIfAborted(opts?.signal);
      // No mkdir: the doctor changes nothing (the disk check looks at the nearest existing folder).
      const rootDir = resolve(options.rootDir ?? join(runctlHome(), "local"));
      return { checks: [{ id: "transport", title: `this machine (${hostname()})`, status: "ok", detail: "runs locally, no connection needed" }], machines: [machineFor(rootDir)] };
    },
  };
}
