import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";

/**
 * A fake EC2 instance-metadata service (IMDSv2) for one test host: a real HTTP server on the testbed
 * bridge address that the host's agent polls. A test switches it to "interruption in N seconds" or
 * to a rebalance recommendation. Tokens are required exactly as on EC2.
 */
export interface TestImds {
  /** `http://ADDR:PORT`, for `SshHost.imdsEndpoint`. */
  readonly endpoint: string;
  /** Issues a spot interruption notice: `{ action, time: now + inSeconds }`. */
  interruptIn(inSeconds: number, action?: "terminate" | "stop" | "hibernate"): void;
  /** Issues a rebalance recommendation. */
  recommendRebalance(): void;
  /** No notice any more. */
  clear(): void;
  /** Requests seen: token PUTs, metadata GETs with a valid token, GETs refused for a missing/bad token. */
  readonly counts: { tokens: number; gets: number; refused: number };
  stop(): Promise<void>;
}

export async function startImds(address: string): Promise<TestImds> {
  const tokens = new Set<string>();
  const counts = { tokens: 0, gets: 0, refused: 0 };
  let notice: { action: string; time: string } | undefined;
  let rebalance: { noticeTime: string } | undefined;

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const send = (status: number, body = ""): void => {
      res.writeHead(status, { "content-type": "text/plain" });
      res.end(body);
    };
    if (req.method === "PUT" && req.url === "/latest/api/token") {
      if (!req.headers["x-aws-ec2-metadata-token-ttl-seconds"]) return send(400, "missing TTL");
      const token = `tok-${Math.random().toString(36).slice(2)}`;
      tokens.add(token);
      counts.tokens += 1;
      return send(200, token);
    }
    if (req.method !== "GET") return send(405);
    const token = req.headers["x-aws-ec2-metadata-token"];
    if (typeof token !== "string" || !tokens.has(token)) {
      counts.refused += 1;
      return send(401);
    }
    counts.gets += 1;
    if (req.url === "/latest/meta-data/spot/instance-action") return notice ? send(200, JSON.stringify(notice)) : send(404, "Not Found");
    if (req.url === "/latest/meta-data/events/recommendations/rebalance") return rebalance ? send(200, JSON.stringify(rebalance)) : send(404, "Not Found");
    return send(404, "Not Found");
  };

  const server: Server = createServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, address, () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  const iso = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
  return {
    endpoint: `http://${address}:${port}`,
    counts,
    interruptIn(inSeconds, action = "terminate") {
      notice = { action, time: iso(Date.now() + inSeconds * 1000) };
    },
    recommendRebalance() {
      rebalance = { noticeTime: iso(Date.now()) };
    },
    clear() {
      notice = undefined;
      rebalance = undefined;
    },
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
