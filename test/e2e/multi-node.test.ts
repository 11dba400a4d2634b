/**
 * Multi-node training for real: examples/multi-node.ts on SSH test hosts, torchrun (Debian's
 * python3-torch) and DDP over gloo across network namespaces.
 * - two nodes train one model: both ranks end with the same weights, node 0's checkpoint verifies,
 *   every node's lines arrive tagged;
 * - one node's host is killed mid-run (pool of 3, `.recover()`): the gang restarts on the two live
 *   hosts from the last verified checkpoint and ends with the weights of an uninterrupted run;
 * - a spot notice on one node stops the gang, node 0 saves, the gang resumes with no step lost.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MachineRecord, RunEvent, SshHost, Storage } from "runctl";
import { s3 } from "runctl/aws";
import { main as multiNode, type MultiNodeOutcome } from "../../examples/multi-node.js";
import { startImds, type TestImds } from "../support/imds-server.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../support/s3-server.js";
import { sshHostOf } from "../support/ssh-hosts.js";
import { useTempRunctlHome } from "../support/temp-home.js";
import { leaseTestHosts, testbedInfo, type HostLease } from "../testbed/inject.js";

const home = useTempRunctlHome("e2e-multi-node");
let lease: HostLease;
let hosts: SshHost[];
let imds: TestImds[];
let server: TestS3Server;
/** weights_sha256 of an uninterrupted two-node run with the tests' hyperparameters. */
let reference: string | undefined;

const HYPERPARAMS = { steps: 60, "checkpoint-every": 10, "sleep-per-step": 0.08 };

beforeAll(async () => {
  lease = await leaseTestHosts(3);
  const gateway = testbedInfo().gateway;
  imds = await Promise.all(lease.hosts.map(() => startImds(gateway)));
  hosts = await Promise.all(lease.hosts.map((h, i) => sshHostOf(h, { imdsEndpoint: imds[i]!.endpoint, imdsPollMs: 200 })));
  server = await startS3Server({ address: gateway, buckets: ["runctl-test"] });
}, 300_000);
afterAll(async () => {
  await server?.stop();
  await Promise.all((imds ?? []).map((i) => i.stop()));
  for (const h of lease?.hosts ?? []) if (!(await h.isAlive())) await h.start();
  await lease?.release();
});

function bucket(prefix: string): Storage {
  return s3(`s3://runctl-test/${prefix}`, { ...S3RVER_CLIENT_SETTINGS, endpoint: server.endpoint, credentials: TEST_AWS_CREDENTIALS });
}
/** `weights_sha256` of each node's last FINAL_STEP line, by node. */
function finalShas(outcome: MultiNodeOutcome): Map<number | undefined, string> {
  const shas = new Map<number | undefined, string>();
  for (const { node, line } of outcome.lines) {
    const m = /^FINAL_STEP (\d+) weights_sha256=([0-9a-f]{64})$/.exec(line);
    if (m && m[1] === String(HYPERPARAMS.steps)) shas.set(node, m[2]!);
  }
  return shas;
}
/** The leased test host that node `rank` of the run runs on (from the run's journal). */
function hostOfNode(runId: string, rank: number): number {
  const record = JSON.parse(readFileSync(join(home, "runs", runId, "run.json"), "utf8")) as { nodes?: MachineRecord[] };
  const address = record.nodes?.[rank]?.["host"];
  const i = hosts.findIndex((h) => h.host === address);
  if (i < 0) throw new Error(`node ${rank} of ${runId} is on no leased host (${String(address)})`);
  return i;
}

describe("multi-node training (.nodes)", () => {
  it("two nodes train one DDP model: same weights on both ranks, node 0's checkpoint verifies, lines tagged by node", async () => {
    const outcome = await multiNode({ hosts: hosts.slice(0, 2), hyperparams: HYPERPARAMS, verbose: false });
    const { result, lines, events, latest, verification } = outcome;
    expect(result.status).toBe("succeeded");
    expect(result.exitCode).toBe(0);
    const shas = finalShas(outcome);
    expect([...shas.keys()].sort()).toEqual([0, 1]);
    expect(shas.get(0)).toBe(shas.get(1));
    reference = shas.get(0);
    // Every node's lines arrive, tagged; torchrun ran each node's rank.
    expect(lines.some((l) => l.node === 0 && l.line.startsWith("DDP_INFO rank=0 world_size=2"))).toBe(true);
    expect(lines.some((l) => l.node === 1 && l.line.startsWith("DDP_INFO rank=1 world_size=2"))).toBe(true);
    const metrics = events.filter((e): e is Extract<RunEvent, { type: "metric" }> => e.type === "metric");
    expect(metrics.map((m) => m.step)).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    expect(metrics.every((m) => m.node === 0)).toBe(true);
    expect(latest?.step).toBe(60);
    expect(verification).toEqual({ ok: true, problems: [] });
  });

  it("a node's host killed mid-run: the gang restarts on live hosts from the last verified checkpoint, same final weights", async () => {
    expect(reference).toBeDefined();
    let killed: number | undefined;
    const outcome = await multiNode({
      hosts,
      storage: bucket("mn-kill"),
      recover: { maxRestarts: 1, hostLostAfterMs: 3000, backoffMs: 200 },
      graceMs: 3000,
      hyperparams: HYPERPARAMS,
      verbose: false,
      onEvent: async (event) => {
        if (killed === undefined && event.type === "metric" && event.step === 25) {
          killed = hostOfNode(event.runId, 1);
          await lease.hosts[killed]!.kill();
        }
      },
    });
    const { result, events, latest, verification } = outcome;
    expect(killed).toBeDefined();
    expect(result.status).toBe("succeeded");
    expect(result.restarts).toBe(1);
    const resumed = events.find((e) => e.type === "resumed");
    expect(resumed?.type === "resumed" && resumed.step).toBeGreaterThanOrEqual(20);
    expect(events.some((e) => e.type === "warning" && e.code === "GANG_STOPPING")).toBe(true);
    // The restarted gang ran on the two hosts that were alive.
    const record = JSON.parse(readFileSync(join(home, "runs", result.runId, "run.json"), "utf8")) as { nodes: MachineRecord[] };
    expect(record.nodes.map((n) => n["host"])).not.toContain(hosts[killed!]!.host);
    const shas = finalShas(outcome);
    expect(shas.get(0)).toBe(reference);
    expect(shas.get(1)).toBe(reference);
    expect(latest?.step).toBe(60);
    expect(verification).toEqual({ ok: true, problems: [] });
    await lease.hosts[killed!]!.start();
  });

  it("a spot notice on one node stops the whole gang, node 0 saves, and the gang resumes with no step lost", async () => {
    let noticed: number | undefined;
    const outcome = await multiNode({
      hosts,
      storage: bucket("mn-spot"),
      recover: { maxRestarts: 1, backoffMs: 200 },
      graceMs: 10_000,
      hyperparams: { ...HYPERPARAMS, "checkpoint-every": 0 },
      verbose: false,
      onEvent: (event) => {
        if (noticed === undefined && event.type === "metric" && event.step === 20) {
          noticed = hostOfNode(event.runId, 1);
          imds[noticed]!.interruptIn(120);
        }
      },
    });
    for (const i of imds) i.clear();
    const { result, lines } = outcome;
    expect(noticed).toBeDefined();
    expect(result.status).toBe("succeeded");
    expect(result.restarts).toBe(1);
    expect(result.interruptions[0]!.lostSteps).toBe(0);
    const saved = lines.find((l) => l.node === 0 && l.line.startsWith("SIGTERM_CHECKPOINT "))?.line.split(" ")[1];
    expect(saved).toBeDefined();
    expect(lines.filter((l) => l.line === `RESUMED_FROM_STEP ${saved}`).map((l) => l.node).sort()).toEqual([0, 1]);
    const shas = finalShas(outcome);
    expect(shas.get(0)).toBe(reference);
    expect(shas.get(1)).toBe(reference);
  });
});
