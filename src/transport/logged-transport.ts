import type { SourceLogger } from "../util/logger.js";
import { shellJoin, shellQuote } from "../util/shell-quote.js";
import type { Command, ExecOptions, Transport } from "./types.js";

/**
 * The transport with each command and file transfer logged at `debug` (what ran, its exit code and
 * duration); the transport itself unless the logger is enabled. Only names are logged where values
 * could be secret: the environment by its variable names; stdin (where secrets travel) not at all.
 *
 * @example
 * ```ts
 * const t = loggedTransport(localTransport(), sourceLogger(options.logger, "transport"));
 * ```
 */
export function loggedTransport<T extends Transport>(transport: T, log: SourceLogger): T {
  if (!log.enabled) return transport;
  const where = (): string => transport.host;
  const exec = (command: Command, options: ExecOptions = {}): ReturnType<Transport["exec"]> => {
    const what = describe(command);
    const env = options.env ? Object.keys(options.env) : [];
    log.debug(`${where()}: exec ${what}${options.cwd ? ` (cwd ${options.cwd})` : ""}${env.length ? ` (env ${env.join(", ")})` : ""}`, { host: where(), command: what, envNames: env });
    const handle = transport.exec(command, options);
    // Logged when awaited, never by awaiting it here: an SSH handle awaited before it is iterated
    // stops queueing output for an iterator that starts later.
    let logged = false;
    const once = (write: () => void): void => {
      if (!logged) write();
      logged = true;
    };
    return {
      then(onFulfilled, onRejected) {
        return handle
          .then(
            (r) => {
              once(() => log.debug(`${where()}: exit ${r.exitCode ?? r.signal ?? "?"} in ${r.durationMs} ms: ${what}`, { host: where(), command: what, exitCode: r.exitCode, signal: r.signal, durationMs: r.durationMs }));
              return r;
            },
            (err: unknown) => {
              once(() => log.debug(`${where()}: failed: ${what}: ${(err as Error).message}`, { host: where(), command: what }));
              throw err;
            },
          )
          .then(onFulfilled, onRejected);
      },
      [Symbol.asyncIterator]: () => handle[Symbol.asyncIterator](),
    };
  };
  const transfer = async <R>(verb: string, from: string, to: string, go: () => Promise<R>): Promise<R> => {
    const started = performance.now();
    log.debug(`${where()}: ${verb} ${from} -> ${to}`, { host: where(), from, to });
    try {
      const result = await go();
      log.debug(`${where()}: ${verb} done in ${Math.round(performance.now() - started)} ms: ${to}`, { host: where(), from, to, durationMs: Math.round(performance.now() - started) });
      return result;
    } catch (err) {
      log.debug(`${where()}: ${verb} failed: ${to}: ${(err as Error).message}`, { host: where(), from, to });
      throw err;
    }
  };
  // A proxy, so a transport's own extras (`SshTransport.connect`) stay reachable.
  return new Proxy(transport, {
    get(target, key, receiver) {
      if (key === "exec") return exec;
      if (key === "putFile") return (local: string, remote: string, options?: Parameters<Transport["putFile"]>[2]) => transfer("put", local, remote, () => target.putFile(local, remote, options));
      if (key === "getFile") return (remote: string, local: string, options?: Parameters<Transport["getFile"]>[2]) => transfer("get", remote, local, () => target.getFile(remote, local, options));
      const value: unknown = Reflect.get(target, key, receiver);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** A command for the log: argv quoted as a shell would take it; a script cut to its first 200 characters. */
function describe(command: Command): string {
  if ("script" in command) return `sh -c ${shellQuote(command.script.length > 200 ? `${command.script.slice(0, 200)}...` : command.script)}`;
  return shellJoin(command);
}
