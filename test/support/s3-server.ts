import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";

const S3RVER = fileURLToPath(new URL("../../node_modules/s3rver/bin/s3rver.js", import.meta.url));

/** A running S3-protocol server (s3rver 3.7.1) for tests: a real HTTP server, real objects on disk. */
export interface TestS3Server {
  /** `http://ADDR:PORT`. */
  readonly endpoint: string;
  readonly address: string;
  readonly port: number;
  /** Folder the server keeps objects in (`<dir>/<bucket>/...`). */
  readonly dir: string;
  /** Buckets created at start. */
  readonly buckets: readonly string[];
  /** The server process's pid while it runs (benches read its CPU time from /proc). */
  readonly pid: number | undefined;
  /** Kills the server (SIGKILL, mid-request if any): for fault tests. */
  kill(): Promise<void>;
  /** Starts it again on the same address, port and folder (objects survive). */
  restart(): Promise<void>;
  /** Stops it and removes its folder. */
  stop(): Promise<void>;
}

/** Client settings that s3rver needs: path-style addressing and checksums only when required. */
export const S3RVER_CLIENT_SETTINGS = { forcePathStyle: true, checksums: "when_required", region: "us-east-1" } as const;

/** Dummy credentials: s3rver checks no signatures, but SDKs insist on having some. */
export const TEST_AWS_CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" } as const;

async function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, address, () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts s3rver as its own process (`--openssl-legacy-provider`: without it every truncated
 * ListObjectsV2 page is a 500) on `address` (127.0.0.1, or the testbed bridge so hosts reach it).
 */
export async function startS3Server(options: { readonly address?: string; readonly buckets?: readonly string[]; readonly port?: number } = {}): Promise<TestS3Server> {
  const address = options.address ?? "127.0.0.1";
  const buckets = options.buckets ?? ["runctl-test"];
  const port = options.port ?? (await freePort(address));
  const dir = mkdtempSync(join(tmpdir(), "runctl-s3rver-"));
  let child: ChildProcess | undefined;

  const start = async (): Promise<void> => {
    const args = ["--openssl-legacy-provider", S3RVER, "-d", dir, "-a", address, "-p", String(port), "--silent", "--no-vhost-buckets"];
    for (const b of buckets) args.push("--configure-bucket", b);
    child = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
    for (let i = 0; i < 100; i++) {
      if (child.exitCode !== null) throw new Error(`s3rver exited (${child.exitCode}): ${stderr}`);
      const up = await fetch(`http://${address}:${port}/`).then(
        (r) => r.status < 500,
        () => false,
      );
      if (up) return;
      await sleep(50);
    }
    throw new Error(`s3rver did not start on ${address}:${port}: ${stderr}`);
  };
  const kill = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null) return;
    const closed = new Promise((r) => c.once("close", r));
    c.kill("SIGKILL");
    await closed;
  };

  await start();
  return {
    endpoint: `http://${address}:${port}`,
    address,
    port,
    dir,
    buckets,
    get pid() {
      return child?.exitCode === null ? child.pid : undefined;
    },
    kill,
    restart: start,
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
