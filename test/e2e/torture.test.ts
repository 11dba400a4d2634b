/**
 * Issue 10's acceptance: the torture test. Two loops side by side, one per storage: checkpoints in
 * the host's own runctl folder (the default for SSH hosts: a plain folder on the machine, what
 * `localDir` is to `local()`) and in S3 (s3rver on the testbed bridge). Each iteration runs the
 * torture trainer (test/fixtures/torture) and kills one of trainer, agent, client, S3 server or SSH
 * link at a seeded random moment, then checks the invariants through the public API
 * (test/support/torture-checks.ts). The seed is printed; `RUNCTL_TORTURE_SEED=<seed>` replays it,
 * `RUNCTL_TORTURE_ITERATIONS=<n>` sets iterations per storage. The full-size run is `npm run bench:torture`.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { leaseTestHosts, testbedInfo, type HostLease } from "../testbed/inject.js";
import { startS3Server, type TestS3Server } from "../support/s3-server.js";
import { sshHostOf } from "../support/ssh-hosts.js";
import { useTempRunctlHome } from "../support/temp-home.js";
import { formatTortureReport, runTortureLoop, totalViolations, tortureSeed, type TortureTarget } from "../support/torture.js";

useTempRunctlHome("e2e-torture");

/** Iterations per storage in CI: 2 × 25 = 50. */
const ITERATIONS_PER_STORAGE = Number(process.env["RUNCTL_TORTURE_ITERATIONS"] ?? 25);
const BUCKET = "runctl-torture";

let lease: HostLease | undefined;
let server: TestS3Server | undefined;

beforeAll(async () => {
  lease = await leaseTestHosts(2);
  server = await startS3Server({ address: testbedInfo().gateway, buckets: [BUCKET] });
});
afterAll(async () => {
  // The loop undoes its own faults; this is the backstop (heals partitions, restarts killed hosts).
  await server?.stop();
  await lease?.release();
});

describe("torture (issue 10 acceptance)", () => {
  it(
    `${ITERATIONS_PER_STORAGE} iterations per storage of kill-at-random (trainer, agent, client, S3, SSH): every invariant holds`,
    async () => {
      const [a, b] = lease!.hosts;
      const seed = tortureSeed();
      console.log(`[torture] seed ${seed} (replay with RUNCTL_TORTURE_SEED=${seed})`);
      const targets: TortureTarget[] = [
        { label: "machine", testHost: a!, host: await sshHostOf(a!), storage: { kind: "machine" } },
        {
          label: "s3",
          testHost: b!,
          host: await sshHostOf(b!),
          storage: { kind: "s3", uri: `s3://${BUCKET}/ci-${seed}`, endpoint: server!.endpoint },
          s3Server: server,
        },
      ];
      const reports = await Promise.all(targets.map((t) => runTortureLoop(t, { iterations: ITERATIONS_PER_STORAGE, seed, log: (l) => console.log(l) })));
      const summary = formatTortureReport(reports);
      console.log(summary);
      expect(reports.reduce((n, r) => n + r.iterations, 0)).toBe(2 * ITERATIONS_PER_STORAGE);
      // Every kind was tried and most kills hit something alive (else the timing knobs are off).
      for (const r of reports) {
        for (const [kind, k] of Object.entries(r.kills)) {
          if (kind === "s3" && r.label !== "s3") continue;
          if (ITERATIONS_PER_STORAGE >= 10) expect(k.attempted, `${r.label}: ${kind} never drawn`).toBeGreaterThan(0);
        }
      }
      expect(totalViolations(reports), summary).toBe(0);
    },
    15 * 60_000,
  );
});
