/**
 * Benchmark: how long losing one node of a multi-node run costs. A 2-node DDP run (examples/multi-node.ts,
 * torchrun + gloo) on a pool of 3 SSH test hosts, checkpoints in S3 (s3rver on the testbed bridge), has
 * node 1's host killed mid-run (the testbed's machine crash: SIGKILL to the host's PID 1). runctl notices
 * the lost machine (`hostLostAfterMs`), stops the rest of the gang (SIGTERM, SIGKILL after `graceMs`:
 * the surviving torchrun ignores SIGTERM while its peer is dead), and restarts the whole gang on the two
 * live hosts from the newest verified checkpoint.
 *
 *   npm run bench:multi-node                  # = npx tsx bench/multi-node-recovery.ts
 *   BENCH_REPS=5 BENCH_LOST_AFTER_MS=10000 npm run bench:multi-node
 *
 * Per repetition, from the moment the host is killed:
 *   kill -> gang stopping        the client knows a node is gone and stops the others
 *   kill -> recovering           every node of the old gang has ended; the machines go back
 *   kill -> all ranks training   the first metric of the restarted gang (DDP steps need every rank)  (goal < 30 s)
 * and prints the medians, then the last one as a `BENCH_ROW` line (bench/bench-row.ts). Not a test: nothing here fails a build. There is no peer tool to measure
 * beside it on this machine (SkyPilot, dstack and SageMaker need their clouds), so it prints the goal.
 *
 * Safety: it connects only to the hosts it has just created, after checking that they route through
 * the testbed's own bridge; the S3 server listens on the bridge's own address.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import type { MachineRecord, RunEvent, SshHost } from "runctl";
import { s3 } from "runctl/aws";
import { main as multiNode } from "../examples/multi-node.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../test/support/s3-server.js";
import { defaultStateDir } from "../test/testbed/global-setup.js";
import { startTestbed, type Testbed } from "../test/testbed/testbed.js";
import { intEnv, printBenchRow, runBench } from "./bench-row.js";

const REPS = intEnv("BENCH_REPS", 3);
const LOST_AFTER_MS = intEnv("BENCH_LOST_AFTER_MS", 5000);
const GRACE_MS = intEnv("BENCH_GRACE_MS", 5000);
const GOAL_MS = 30_000;
const BUCKET = "runctl-bench";

const median = (values: readonly number[]): number => {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};
const seconds = (ms: number): string => (ms / 1000).toFixed(2);

async function main(): Promise<void> {
  const runctlHome = mkdtempSync(join(tmpdir(), "runctl-bench-home-"));
  process.env["RUNCTL_HOME"] = runctlHome;
  let bed: Testbed | undefined;
  let server: TestS3Server | undefined;
  const cleanup = async (): Promise<void> => {
    await server?.stop().catch(() => {});
    await bed?.stop().catch(() => {});
    rmSync(runctlHome, { recursive: true, force: true });
  };
  process.once("SIGINT", () => void cleanup().finally(() => process.exit(130)));
  try {
    bed = await startTestbed({ hosts: 3, stateDir: defaultStateDir() });
    const testHosts = bed.hosts;
    for (const h of testHosts) await bed.assertSafe(h.address);
    server = await startS3Server({ address: bed.info.gateway, buckets: [BUCKET] });
    const endpoint = server.endpoint;
    const hosts: SshHost[] = testHosts.map((h) => ({ host: h.address, port: h.port, username: h.user, privateKeyPath: h.privateKeyPath, knownHostsPath: h.knownHostsPath }));
    console.log(`multi-node recovery benchmark: 2-node DDP gang on a pool of 3 testbed hosts; hostLostAfterMs ${LOST_AFTER_MS}, graceMs ${GRACE_MS}; ${cpus().length} CPUs, Node ${process.version}; ${REPS} repetitions\n`);
    const rows: { stop: number; recovering: number; training: number }[] = [];
    for (let rep = 0; rep < REPS; rep++) {
      for (const h of testHosts) if (!(await h.isAlive())) await h.start();
      let killedAt: number | undefined;
      const { result, events } = await multiNode({
        hosts,
        storage: s3(`s3://${BUCKET}/rep-${rep}`, { ...S3RVER_CLIENT_SETTINGS, endpoint, credentials: TEST_AWS_CREDENTIALS }),
        recover: { maxRestarts: 1, hostLostAfterMs: LOST_AFTER_MS, backoffMs: 200 },
        graceMs: GRACE_MS,
        hyperparams: { steps: 80, "checkpoint-every": 10, "sleep-per-step": 0.1 },
        verbose: false,
        onEvent: async (event) => {
          if (killedAt !== undefined || event.type !== "metric" || event.step !== 25) return;
          const record = JSON.parse(readFileSync(join(runctlHome, "runs", event.runId, "run.json"), "utf8")) as { nodes: MachineRecord[] };
          const victim = testHosts.find((h) => h.address === record.nodes[1]?.["host"]);
          if (!victim) throw new Error("node 1's host is not a testbed host");
          killedAt = Date.now();
          await victim.kill();
        },
      });
      if (killedAt === undefined || result.status !== "succeeded" || result.restarts !== 1) throw new Error(`repetition ${rep + 1}: ${result.status} after ${result.restarts} restart(s)`);
      const after = (pred: (e: RunEvent) => boolean, from = 0): number => {
        const i = events.findIndex((e, k) => k >= from && pred(e));
        return i < 0 ? NaN : Date.parse(events[i]!.time) - killedAt!;
      };
      const recoveredAt = events.findIndex((e) => e.type === "recovered");
      const row = {
        stop: after((e) => e.type === "warning" && e.code === "GANG_STOPPING"),
        recovering: after((e) => e.type === "phase" && e.phase === "recovering"),
        training: after((e) => e.type === "metric", recoveredAt),
      };
      rows.push(row);
      console.log(`  repetition ${rep + 1}/${REPS}: gang stopping ${seconds(row.stop)} s, recovering ${seconds(row.recovering)} s, all ranks training again ${seconds(row.training)} s`);
    }
    const m = (k: keyof (typeof rows)[number]): string => seconds(median(rows.map((r) => r[k])));
    console.log("");
    console.log("part                          median s  goal     met");
    console.log(`kill -> gang stopping         ${m("stop").padStart(8)}`);
    console.log(`kill -> recovering            ${m("recovering").padStart(8)}`);
    const training = median(rows.map((r) => r.training));
    console.log(`kill -> all ranks training    ${m("training").padStart(8)}  < ${GOAL_MS / 1000} s  ${training < GOAL_MS ? "yes" : "NO"}`);
    console.log("");
    printBenchRow({ bench: "multi-node", row: "node lost -> all ranks training again", value: training / 1000, unit: "s", peer: null, ratio: null, goal: `< ${GOAL_MS / 1000} s`, met: Number.isFinite(training) ? training < GOAL_MS : null });
  } finally {
    await cleanup();
  }
}

runBench(main);
