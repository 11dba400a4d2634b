/**
 * A whole training run through the engine over the SSM transport: a small provider whose machine
 * is reached only through SSM (a fake control plane that runs commands on this machine, see
 * test/support/fake-ssm.ts) with staging, checkpoints and command output in a real S3 server
 * (s3rver on loopback). Nothing reaches the machine by a byte stream: the agent, the sync tar and
 * the launch spec are staged in S3 and fetched there by the `aws` CLI; the run is followed in
 * bounded `follow` calls.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runctl, type Machine, type Provider, type RunEvent } from "runctl";
import { s3, type S3Storage } from "runctl/aws";
import { ssmTransport, type SsmTransport } from "../../src/transport/ssm/index.js";
import { fakeSsm, type FakeSsm } from "../support/fake-ssm.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../support/s3-server.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("e2e-ssm");
const TRAINING = join(dirname(fileURLToPath(import.meta.url)), "..", "fixtures", "trainers");

let server: TestS3Server;
let ssm: FakeSsm;

beforeAll(async () => {
  server = await startS3Server({ buckets: ["runctl-test"] });
  ssm = fakeSsm({
    // The instance profile of the "instance": credentials for the S3 server; the Debian aws CLI v2.
    env: {
      AWS_ACCESS_KEY_ID: TEST_AWS_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: TEST_AWS_CREDENTIALS.secretAccessKey,
      AWS_DEFAULT_REGION: "us-east-1",
      AWS_EC2_METADATA_DISABLED: "true",
      PATH: `/usr/bin:${process.env["PATH"] ?? ""}`,
    },
    s3: bucket("staging").client,
  });
});
afterAll(async () => {
  ssm?.restore();
  await server?.stop();
});

function bucket(prefix: string): S3Storage {
  return s3(`s3://runctl-test/${prefix}`, { ...S3RVER_CLIENT_SETTINGS, endpoint: server.endpoint, credentials: TEST_AWS_CREDENTIALS });
}

/** A provider with one machine reached only through SSM (modelled on local()). */
function ssmProvider(staging: S3Storage, rootDir: string): Provider & { readonly transports: SsmTransport[] } {
  const transports: SsmTransport[] = [];
  return {
    name: "ssm-test",
    sharesLocalFilesystem: false,
    transports,
    async provision(request) {
      const transport = ssmTransport({ instanceId: ssm.instanceId, client: ssm.client, staging, runId: request.runId, user: null, pollMs: 25, maxPollMs: 250 });
      transports.push(transport);
      await transport.ready({ timeoutMs: 20_000 });
      const machine: Machine = {
        id: ssm.instanceId,
        provider: "ssm-test",
        address: ssm.instanceId,
        transport,
        rootDir,
        python: "/usr/bin/python3",
        sharesLocalFilesystem: false,
        tags: {},
        hourlyPriceUsd: 0,
        record: { provider: "ssm-test", id: ssm.instanceId, rootDir },
      };
      return machine;
    },
    async release(machine) {
      await machine.transport.close();
    },
    async describe() {
      return "running";
    },
  };
}

/** The script the machine ran for an invocation, decoded from the transport's base64 wrapper. */
function decoded(script: string): string {
  const b64 = /printf '%s' ([A-Za-z0-9+/=]+) \| base64 -d/.exec(script)?.[1];
  return b64 ? Buffer.from(b64, "base64").toString("utf8") : script;
}

async function keysUnder(storage: S3Storage, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of storage.list(prefix)) keys.push(o.key);
  return keys;
}

describe("a training run over SSM", () => {
  it("syncs, trains, streams every log line once and in order, and commits verified checkpoints", async () => {
    const staging = bucket("staging");
    const checkpoints = bucket("ckpt");
    const rootDir = tempDir("ssm-machine");
    const provider = ssmProvider(staging, rootDir);
    const firstInvocation = ssm.invocations.length;

    const run = Runctl.instance(provider)
      .sync(TRAINING)
      .checkpoints({ storage: checkpoints, keep: 3 })
      .train("train_mnist_e2e.py", { hyperparams: { lr: 0.5, steps: 60, "checkpoint-every": 10, "sleep-per-step": 0.06 } });
    const events: RunEvent[] = [];
    for await (const event of run) events.push(event);
    const result = await run;

    expect(result.status, JSON.stringify(result.error)).toBe("succeeded");
    expect(result.exitCode).toBe(0);

    // Every line of train.log arrived once, in order, with its byte offset.
    const logs = events.filter((e): e is Extract<RunEvent, { type: "log" }> => e.type === "log");
    const trainLog = readFileSync(join(rootDir, "runs", run.runId, "train.log"), "utf8");
    expect(logs.map((e) => e.line).join("\n")).toBe(trainLog.replace(/\n$/, ""));
    expect(logs.map((e) => e.offset)).toEqual([...logs.map((e) => e.offset)].sort((a, b) => a - b));
    expect(new Set(logs.map((e) => e.offset)).size).toBe(logs.length);
    expect(logs.some((e) => e.line.startsWith("FINAL_STEP 60"))).toBe(true);
    const metricSteps = events.flatMap((e) => (e.type === "metric" && e.step !== undefined ? [e.step] : []));
    expect(metricSteps).toEqual([...metricSteps].sort((a, b) => a - b));
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));

    // Checkpoints: committed in S3 by the machine, the newest three kept, the latest verifies.
    const store = run.checkpoints();
    expect((await store.list()).map((c) => c.step)).toEqual([40, 50, 60]);
    const latest = (await store.latest())!;
    expect((await latest.verify()).ok).toBe(true);

    // The sync went through staging: the tar was fetched from S3 by the machine, never sent inline.
    const mine = ssm.invocations.slice(firstInvocation);
    const scripts = mine.map((inv) => decoded(inv.script));
    const apply = scripts.find((s) => s.includes(" sync-apply "));
    expect(apply).toMatch(new RegExp(`aws s3 cp s3://runctl-test/staging/runctl-staging/${run.runId}/[\\w-]+\\.stdin -`));
    expect(scripts.find((s) => s.includes(" launch "))).toMatch(/\.stdin -/);
    expect(Math.max(...mine.map((inv) => inv.script.length))).toBeLessThan(8_000);
    const sync = events.find((e) => e.type === "sync");
    expect(sync).toMatchObject({ type: "sync", uploadedFiles: expect.any(Number) });
    expect((sync as { uploadedFiles: number }).uploadedFiles).toBeGreaterThan(0);
    // Followed in bounded calls; the machine released its staging folder at the end.
    const follows = scripts.filter((s) => s.includes(" follow "));
    expect(follows.length).toBeGreaterThan(1);
    expect(follows.every((s) => s.includes("--max-wait-ms 2000 --max-bytes 16000"))).toBe(true);
    expect(await keysUnder(staging, `runctl-staging/${run.runId}/`)).toEqual([]);
  });

  it("follows a chatty trainer through many bounded calls without losing or repeating a line", async () => {
    const code = tempDir("ssm-chatty");
    writeFileSync(join(code, "chatty.py"), "import time\nfor i in range(4000):\n    print('line %05d %s' % (i, 'x' * 40))\n    if i % 1000 == 0: time.sleep(0.3)\n");
    const rootDir = tempDir("ssm-machine2");
    const staging = bucket("staging2");
    const run = Runctl.instance(ssmProvider(staging, rootDir)).sync(code).checkpoints({ storage: bucket("ckpt2") }).train("chatty.py");
    const lines: string[] = [];
    // The agent's own notes (`[runctl] ...`) share train.log with the trainer.
    for await (const e of run) if (e.type === "log" && !e.line.startsWith("[runctl]")) lines.push(e.line);
    expect((await run).status).toBe("succeeded");
    expect(lines).toEqual(Array.from({ length: 4000 }, (_, i) => `line ${String(i).padStart(5, "0")} ${"x".repeat(40)}`));
    // About 200 KB of frames at most 16,000 bytes a call: well over a dozen calls.
    const follows = ssm.invocations.filter((inv) => decoded(inv.script).includes(`/runs/${run.runId} `) && decoded(inv.script).includes(" follow "));
    expect(follows.length).toBeGreaterThan(12);
    expect(follows.every((inv) => inv.stdout.length <= 16_000)).toBe(true);
  });
});
