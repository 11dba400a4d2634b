import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer as createHttpServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { forwardRequest } from "./http-gate-proxy.js";

/** One request that passed the proxy, as it arrived. */
export interface RecordedRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
}

/** A front for a plain-http server on loopback, over http or https, recording each request's headers. */
export interface RecordingProxy {
  /** `http(s)://127.0.0.1:PORT`. */
  readonly endpoint: string;
  /** With `tls`: the PEM certificate the proxy serves (self-signed for 127.0.0.1), what a client must trust. */
  readonly ca: string | undefined;
  readonly requests: readonly RecordedRequest[];
  stop(): Promise<void>;
}

/** A fresh self-signed certificate for 127.0.0.1 (made by `openssl`; nothing left on disk). */
function selfSignedCertificate(): { key: string; cert: string } {
  const dir = mkdtempSync(join(tmpdir(), "runctl-tls-"));
  try {
    execFileSync(
      "openssl",
      ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")],
      { stdio: "pipe" },
    );
    return { key: readFileSync(join(dir, "key.pem"), "utf8"), cert: readFileSync(join(dir, "cert.pem"), "utf8") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Listens on 127.0.0.1 (with `tls`: terminating TLS with a fresh self-signed certificate) and
 * forwards every request to `target` (`http://127.0.0.1:PORT`) as it is, recording what arrived.
 */
export async function startRecordingProxy(target: string, options: { readonly tls: boolean }): Promise<RecordingProxy> {
  const upstream = new URL(target);
  if (upstream.hostname !== "127.0.0.1") throw new Error(`startRecordingProxy: ${target} is not on loopback`);
  const requests: RecordedRequest[] = [];
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    requests.push({ method: req.method ?? "?", url: req.url ?? "", headers: req.headers });
    forwardRequest(req, res, upstream);
  };
  const tls = options.tls ? selfSignedCertificate() : undefined;
  const server = tls ? createHttpsServer(tls, handle) : createHttpServer(handle);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    endpoint: `${tls ? "https" : "http"}://127.0.0.1:${(server.address() as AddressInfo).port}`,
    ca: tls?.cert,
    requests,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
