import { createServer, request, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** A forwarding HTTP proxy on loopback that stops at the first request a test is waiting for. */
export interface HttpGateProxy {
  /** `http://127.0.0.1:PORT`: give this to the client instead of the server's endpoint. */
  readonly endpoint: string;
  /** `METHOD url` of each request that hit the gate (none of them was forwarded). */
  readonly gated: readonly string[];
  stop(): Promise<void>;
}

/** Forwards `req` to `upstream` as it is, headers included (signatures still hold), and its answer back to `res`. */
export function forwardRequest(req: IncomingMessage, res: ServerResponse, upstream: URL): void {
  const out = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
    res.writeHead(answer.statusCode ?? 502, answer.headers);
    answer.pipe(res);
  });
  out.on("error", () => res.destroy());
  req.on("error", () => out.destroy());
  req.pipe(out);
}

/**
 * Forwards every request to `target` (an `http://host:port` on loopback) as it is, headers included,
 * so signatures still hold, except those `isGate` picks: for one of those `onGate` runs first (a
 * test kills the client there, so "killed right before this request" is exact, not a race) and the
 * request is never forwarded: its connection is closed.
 */
export async function startHttpGateProxy(target: string, isGate: (req: IncomingMessage) => boolean, onGate: (req: IncomingMessage) => void): Promise<HttpGateProxy> {
  const upstream = new URL(target);
  if (upstream.hostname !== "127.0.0.1") throw new Error(`startHttpGateProxy: ${target} is not on loopback`);
  const gated: string[] = [];
  const server = createServer((req, res) => {
    if (isGate(req)) {
      gated.push(`${req.method ?? "?"} ${req.url ?? ""}`);
      onGate(req);
      req.socket.destroy();
      return;
    }
    forwardRequest(req, res, upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    gated,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
