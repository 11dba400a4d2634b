import { RunctlError, isRunctlError, throwIfAborted } from "../../errors/runctl-error.js";
import { sshTransport, type SshTransport } from "../../transport/ssh/ssh-transport.js";
import { jumpList } from "../../transport/ssh/ssh-route.js";
import type { SshTransportOptions } from "../../transport/ssh/ssh-transport-options.js";
import type { Transport } from "../../transport/types.js";
import { sourceLogger, type RunctlLogger } from "../../util/logger.js";
import type { Machine, MachineRecord, MachineState, Provider } from "../types.js";
import type { DoctorCheck } from "../../util/doctor-check.js";
import { sshFailureCheck } from "./ssh-doctor.js";

/** One SSH machine you already have. Everything but `host` is optional. */
export interface SshHost extends SshTransportOptions {
  /** Python 3 on the host that runs the agent. @defaultValue `"python3"` */
  readonly python?: string | undefined;
  /** runctl's folder on the host (absolute). @defaultValue `$HOME/.runctl` */
  readonly rootDir?: string | undefined;
  /** What the host costs per hour, for cost reports. @defaultValue 0 */
  readonly hourlyPriceUsd?: number | undefined;
  /**
   * An instance-metadata endpoint the agent on this host polls for spot interruption notices (a host
   * that really is a spot instance: `http://169.254.169.254`). @defaultValue none: no polling
   */
  readonly imdsEndpoint?: string | undefined;
  /** How often that endpoint is polled (it is local to the machine, so often is cheap). @defaultValue 500 */
  readonly imdsPollMs?: number | undefined;
}

/** Options of {@link sshHosts}. */
export interface SshHostsOptions {
  /** How long a run waits for a free host of a busy pool before NO_FREE_HOST. @defaultValue no limit */
  readonly acquireTimeoutMs?: number | undefined;
  /** Receives warnings (an unreachable host skipped in a pool, an insecure host key opt-out). @defaultValue `process.emitWarning` */
  readonly onWarning?: ((message: string) => void) | undefined;
  /**
   * Debug output of the provider (hosts leased, skipped, released), of every host's SSH transport
   * (unless the host sets its own `logger`) and of the agent. @defaultValue undefined (silent)
   */
  readonly logger?: RunctlLogger | undefined;
}

/**
 * Machines you already have, over SSH: one host, or a pool that hands each run a free host and takes
 * it back when the run ends (runs beyond the pool's size wait for a host). A host may be an alias of
 * `~/.ssh/config` (or of the `sshConfig` file), whose `HostName`, `User`, `Port`, `IdentityFile` and
 * `ProxyJump` apply; `proxyJump` connects through jump hosts. Host keys (of every hop) are verified
 * against known_hosts. A host that cannot be reached is skipped in a pool; with one host it is a
 * typed error (HOST_UNREACHABLE, AUTH_FAILED, HOST_KEY_MISMATCH) before anything runs.
 *
 * @param hosts - A host (`"user@host:port"` or {@link SshHost}) or a list of them.
 * @example
 * ```ts
 * const pool = sshHosts([
 *   { host: "10.0.0.5", username: "ml", privateKeyPath: "~/.ssh/id_ed25519" },
 *   "ml@gpu-2.lan",
 * ]);
 * const run = Runctl.instance(pool).sync("./").train("train.py");
 * ```
 */
export function sshHosts(hosts: SshHost | string | readonly (SshHost | string)[], options: SshHostsOptions = {}): Provider {
  const list = (Array.isArray(hosts) ? hosts : [hosts]).map((h) => parseHost(h));
  if (list.length === 0) throw new RunctlError("INVALID_ARGUMENT", "sshHosts() needs at least one host.");
  const ids = list.map(hostId);
  if (new Set(ids).size !== ids.length) throw new RunctlError("INVALID_ARGUMENT", `sshHosts(): a host is listed twice (${ids.join(", ")}).`);
  const warn = options.onWarning ?? ((message: string) => process.emitWarning(message, "RunctlWarning"));
  const log = sourceLogger(options.logger, "provider");
  const transportOf = (host: SshHost): SshTransport => sshTransport({ ...host, logger: host.logger ?? options.logger, onWarning: host.onWarning ?? warn });
  const busy = new Set<string>();
  let waiters: Array<() => void> = [];
  const wake = (): void => {
    const current = waiters;
    waiters = [];
    for (const w of current) w();
  };

  const connect = async (host: SshHost, signal: AbortSignal | undefined): Promise<Machine> => {
    const transport = transportOf(host);
    try {
      await transport.connect(signal ? { signal } : {});
      const rootDir = host.rootDir ?? (await homeDir(transport)) + "/.runctl";
      return machineOf(host, transport, rootDir);
    } catch (err) {
      await transport.close().catch(() => {});
      throw err;
    }
  };

  const acquire = async (signal: AbortSignal | undefined, avoid: readonly string[]): Promise<Machine> => {
    const deadline = options.acquireTimeoutMs === undefined ? Infinity : Date.now() + options.acquireTimeoutMs;
    for (;;) {
      throwIfAborted(signal);
      // Hosts a recovering run just lost go last: another free host is tried first.
      const free = list.filter((h) => !busy.has(hostId(h))).sort((a, b) => Number(avoid.includes(hostId(a))) - Number(avoid.includes(hostId(b))));
      let lastError: unknown;
      for (const host of free) {
        busy.add(hostId(host));
        try {
          const machine = await connect(host, signal);
          log.info(`leased ${hostId(host)} (root ${machine.rootDir})`, { host: hostId(host) });
          return machine;
        } catch (err) {
          busy.delete(hostId(host));
          log.debug(`could not lease ${hostId(host)}: ${(err as Error).message}`, { host: hostId(host) });
          if (list.length === 1 || !isRunctlError(err) || err.code === "ABORTED") throw err;
          lastError = err;
          warn(`runctl: skipping ${hostId(host)}: ${err.message}`);
        }
      }
      if (lastError && busy.size === 0) throw lastError;
      if (Date.now() >= deadline) {
        throw new RunctlError("NO_FREE_HOST", `All ${list.length} hosts of the pool are busy${lastError ? " or unreachable" : ""}; waited ${options.acquireTimeoutMs} ms.`, { retryable: true });
      }
      // Wait for a release (or a second, to retry hosts that were unreachable).
      log.debug(`all ${list.length} hosts are busy${lastError ? " or unreachable" : ""}; waiting for one`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(1000, Math.max(0, deadline - Date.now())));
        waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
        signal?.addEventListener("abort", () => resolve(), { once: true });
      });
    }
  };

  return {
    name: "ssh-hosts",
    ...(options.logger !== undefined ? { logger: options.logger } : {}),
    sharesLocalFilesystem: false,
    maxNodes: list.length,
    provision: (request, opts) => acquire(opts?.signal, request.avoid ?? []),
    async release(machine) {
      await machine.transport.close().catch(() => {});
      if (busy.delete(machine.id)) wake();
      log.info(`released ${machine.id}`, { host: machine.id });
    },
    async describe(machine, opts): Promise<MachineState> {
      try {
        const r = await machine.transport.exec(["true"], opts?.signal ? { signal: opts.signal } : {});
        return r.exitCode === 0 ? "running" : "unknown";
      } catch {
        return "unreachable";
      }
    },
    transportFor(record) {
      const host = list.find((h) => hostId(h) === record.id) ?? hostFromRecord(record);
      return transportOf(host);
    },
    async reattach(record, opts) {
      const known = list.find((h) => hostId(h) === record.id);
      const host: SshHost = known ?? hostFromRecord(record);
      const machine = await connect(host, opts?.signal);
      busy.add(machine.id);
      return machine;
    },
    async doctor(opts) {
      // Every host of the pool, busy or not: nothing is leased, each gets its own connection.
      const results = await Promise.all(
        list.map(async (host) => {
          try {
            const machine = await connect(host, opts?.signal);
            const check: DoctorCheck = host.insecureSkipHostKeyCheck
              ? { id: "transport", title: `SSH to ${hostId(host)}`, status: "warn", detail: "connected, but the host key was NOT verified (insecureSkipHostKeyCheck)", fix: "Add the host key to known_hosts (ssh-keyscan, after comparing its fingerprint) and drop insecureSkipHostKeyCheck." }
              : { id: "transport", title: `SSH to ${hostId(host)}`, status: "ok", detail: `connected; host key verified against ${host.knownHostsPath ?? "~/.ssh/known_hosts"}` };
            return { check, machine };
          } catch (err) {
            if (isRunctlError(err) && err.code === "ABORTED") throw err;
            return { check: sshFailureCheck(host, err), machine: undefined };
          }
        }),
      );
      return { checks: results.map((r) => r.check), machines: results.flatMap((r) => (r.machine ? [r.machine] : [])) };
    },
    plan() {
      return {
        resources: list.map((h) => ({ kind: "host-lease", description: `use ${hostId(h)} (existing machine; nothing is created)`, tags: {} })).slice(0, 1),
        hourlyPriceUsd: list[0]?.hourlyPriceUsd ?? 0,
      };
    },
  };
}

/** The machine of a connected SSH host: its record (no secrets: keys are paths) and transport. */
export function machineOf(host: SshHost, transport: Transport, rootDir: string): Machine {
  const id = hostId(host);
  const record: MachineRecord = {
    provider: "ssh-hosts",
    id,
    host: host.host,
    // Only a port given in code: an alias's port comes from the SSH config again on reattach.
    port: host.port,
    username: host.username,
    privateKeyPath: host.privateKeyPath,
    knownHostsPath: host.knownHostsPath,
    // The config file and jump chain are needed to reach an alias again (objects with keys are not kept).
    sshConfig: host.sshConfig,
    proxyJump: typeof host.proxyJump === "string" ? host.proxyJump : undefined,
    python: host.python,
    rootDir,
  };
  return {
    id,
    provider: "ssh-hosts",
    address: host.host,
    transport,
    rootDir,
    python: host.python ?? "python3",
    sharesLocalFilesystem: false,
    tags: {},
    hourlyPriceUsd: host.hourlyPriceUsd ?? 0,
    record,
    ...(host.imdsEndpoint ? { imds: { endpoint: host.imdsEndpoint, pollMs: host.imdsPollMs } } : {}),
  };
}

/** Rebuilds host settings from a journal record (no secrets are stored there; keys come from paths). */
export function hostFromRecord(record: MachineRecord): SshHost {
  const str = (key: string): string | undefined => (typeof record[key] === "string" ? (record[key] as string) : undefined);
  const host = str("host");
  if (!host) throw new RunctlError("INVALID_ARGUMENT", `Cannot reattach machine ${record.id}: its record has no host.`);
  const username = str("username");
  const privateKeyPath = str("privateKeyPath");
  const knownHostsPath = str("knownHostsPath");
  const python = str("python");
  const rootDir = str("rootDir");
  const sshConfig = record["sshConfig"] === false ? false : str("sshConfig");
  const proxyJump = str("proxyJump");
  return {
    host,
    ...(typeof record["port"] === "number" ? { port: record["port"] } : {}),
    ...(username ? { username } : {}),
    ...(privateKeyPath ? { privateKeyPath } : {}),
    ...(knownHostsPath ? { knownHostsPath } : {}),
    ...(sshConfig !== undefined ? { sshConfig } : {}),
    ...(proxyJump ? { proxyJump } : {}),
    ...(python ? { python } : {}),
    ...(rootDir ? { rootDir } : {}),
  };
}

/** The login user's `$HOME` on a connected host (HOST_UNREACHABLE when it cannot be read). */
export async function homeDir(transport: SshTransport): Promise<string> {
  const r = await transport.exec({ script: 'printf %s "$HOME"' });
  const home = r.stdout.trim();
  if (r.exitCode !== 0 || !home.startsWith("/")) {
    throw new RunctlError("HOST_UNREACHABLE", `Could not read $HOME on ${transport.host} (exit ${r.exitCode}): ${r.stderrTail.trim()}`);
  }
  return home;
}

/** `user@host:port` or an object; validated. */
export function parseHost(value: SshHost | string, caller = "sshHosts()"): SshHost {
  if (typeof value === "string") {
    const m = /^(?:([^@\s]+)@)?(\[[^\]]+\]|[^:@\s]+)(?::(\d+))?$/.exec(value);
    if (!m?.[2]) throw new RunctlError("INVALID_ARGUMENT", `${caller}: ${JSON.stringify(value)} is not "user@host:port".`);
    return { host: m[2].replace(/^\[|\]$/g, ""), ...(m[1] ? { username: m[1] } : {}), ...(m[3] ? { port: Number(m[3]) } : {}) };
  }
  if (typeof value !== "object" || value === null || typeof value.host !== "string" || value.host === "") {
    throw new RunctlError("INVALID_ARGUMENT", `${caller}: each host needs a \`host\`.`);
  }
  if (value.port !== undefined && (!Number.isInteger(value.port) || value.port < 1 || value.port > 65535)) {
    throw new RunctlError("INVALID_ARGUMENT", `${caller}: port ${value.port} is not a TCP port.`);
  }
  if (value.sshConfig !== undefined && value.sshConfig !== false && (typeof value.sshConfig !== "string" || value.sshConfig === "")) {
    throw new RunctlError("INVALID_ARGUMENT", `${caller}: sshConfig must be a file path or false.`);
  }
  if (value.proxyJump !== undefined) {
    const jumps = jumpList(value.proxyJump);
    for (const j of jumps) {
      if (typeof j !== "object" || j === null || typeof j.host !== "string" || j.host === "") throw new RunctlError("INVALID_ARGUMENT", `${caller}: each proxyJump host needs a \`host\`.`);
      if (j.port !== undefined && (!Number.isInteger(j.port) || j.port < 1 || j.port > 65535)) throw new RunctlError("INVALID_ARGUMENT", `${caller}: proxyJump port ${j.port} is not a TCP port.`);
    }
  }
  return value;
}

/** `user@host:port`: a host's id in journals and pools. */
export function hostId(host: SshHost): string {
  return `${host.username ? `${host.username}@` : ""}${host.host}:${host.port ?? 22}`;
}
