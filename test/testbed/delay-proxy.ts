/**
 * A TCP proxy on 127.0.0.1 that forwards to a test host (usually its sshd) and delays every chunk by a
 * fixed time in each direction, so a round trip gains about 2 × delayMs. netem is not available in the
 * kernel this project tests on; this gives latency for latency tests.
 *
 * Safety: the target must be loopback or a testbed address that routes via the testbed bridge.
 */
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";
import { assertSafeTarget } from "./net-guard.js";

/** Options of {@link startDelayProxy}. */
export interface DelayProxyOptions {
  /** Target address (a test host's address, or loopback). */
  readonly targetHost: string;
  /** Target port. @defaultValue 22 */
  readonly targetPort?: number;
  /** Delay added to each chunk, each direction. */
  readonly delayMs: number;
  /** The testbed's bridge and subnet; required unless the target is loopback. */
  readonly testbed?: { readonly bridge: string; readonly subnet: string };
}

/** A running proxy. */
export interface DelayProxy {
  readonly host: "127.0.0.1";
  readonly port: number;
  /** Changes the delay for chunks read from now on. */
  setDelay(ms: number): void;
  /** Closes the listener and every proxied connection. */
  close(): Promise<void>;
}

/** Forwards `from` to `to`, delaying every chunk, keeping order, with backpressure. */
function pipeDelayed(from: Socket, to: Socket, delay: () => number): void {
  let pending = 0;
  let lastDue = 0;
  from.on("data", (chunk: Buffer) => {
    // Due times never go backwards, so chunks leave in the order they came even if the delay shrinks.
    const due = Math.max(Date.now() + delay(), lastDue);
    lastDue = due;
    pending++;
    if (pending > 64) from.pause();
    setTimeout(() => {
      pending--;
      if (!to.destroyed) to.write(chunk);
      if (pending <= 16 && from.isPaused()) from.resume();
    }, due - Date.now());
  });
  from.on("end", () => {
    const wait = Math.max(0, lastDue - Date.now());
    setTimeout(() => to.end(), wait + 1);
  });
}

/**
 * Starts a delay proxy.
 *
 * @example
 * ```ts
 * const proxy = await startDelayProxy({ targetHost: host.address, delayMs: 50, testbed: bed.info });
 * // connect the SSH transport to 127.0.0.1:proxy.port (known_hosts entry "[127.0.0.1]:PORT ...")
 * ```
 */
export async function startDelayProxy(options: DelayProxyOptions): Promise<DelayProxy> {
  await assertSafeTarget(options.targetHost, options.testbed);
  let delayMs = options.delayMs;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = netConnect({ host: options.targetHost, port: options.targetPort ?? 22 });
    sockets.add(client);
    sockets.add(upstream);
    const kill = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", kill);
    upstream.on("error", kill);
    client.on("close", () => setTimeout(kill, delayMs + 5));
    upstream.on("close", () => setTimeout(kill, delayMs + 5));
    pipeDelayed(client, upstream, () => delayMs);
    pipeDelayed(upstream, client, () => delayMs);
  });
  await new Promise<void>((resolvePromise, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolvePromise());
  });
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("delay proxy: no port");
  return {
    host: "127.0.0.1",
    port: address.port,
    setDelay(ms: number) {
      delayMs = ms;
    },
    close: () =>
      new Promise<void>((resolvePromise) => {
        for (const s of sockets) s.destroy();
        sockets.clear();
        server.close(() => resolvePromise());
      }),
  };
}
