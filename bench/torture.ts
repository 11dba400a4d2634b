/**
 * The torture test at full size (issue 10's acceptance, "200 in a bench-like script"): the same loop
 * as test/e2e/torture.test.ts (test/support/torture.ts), on its own SSH testbed of two hosts and an
 * s3rver on the testbed bridge, half the iterations with checkpoints in the host's own folder and
 * half in S3, both loops side by side.
 *
 *   npm run bench:torture                         # 200 iterations (100 per storage)
 *   npm run bench:torture -- 40                   # 40 iterations
 *   TORTURE_ITERATIONS=400 npm run bench:torture
 *   RUNCTL_TORTURE_SEED=123 npm run bench:torture # replay a seed
 *
 * Prints every iteration, then kills by kind, violations by invariant, the seed and the time. Exits
 * 1 when any invariant was violated. Needs what `npm test` needs (root; it installs the testbed's
 * apt packages when missing). Connects only to the hosts it creates, after checking that they route
 * through the testbed's bridge; tears everything down at the end (also on Ctrl-C).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startS3Server, type TestS3Server } from "../test/support/s3-server.js";
import { formatTortureReport, runTortureLoop, totalViolations, tortureSeed, type TortureTarget } from "../test/support/torture.js";
import { defaultStateDir } from "../test/testbed/global-setup.js";
import { startTestbed, type Testbed } from "../test/testbed/testbed.js";

const BUCKET = "runctl-torture";

function iterationsWanted(): number {
  const raw = process.argv[2] ?? process.env["TORTURE_ITERATIONS"] ?? "200";
  const n = Math.floor(Number(raw));
  if (!Number.isFinite(n) || n < 2) throw new Error(`iterations must be a number >= 2, got ${raw}`);
  return n;
}

async function main(): Promise<number> {
  const total = iterationsWanted();
  const home = mkdtempSync(join(tmpdir(), "runctl-bench-torture-"));
  process.env["RUNCTL_HOME"] = home;
  let bed: Testbed | undefined;
  let server: TestS3Server | undefined;
  const cleanup = async (): Promise<void> => {
    await server?.stop().catch(() => {});
    await bed?.stop().catch(() => {});
    rmSync(home, { recursive: true, force: true });
  };
  process.once("SIGINT", () => void cleanup().finally(() => process.exit(130)));
  try {
    bed = await startTestbed({ hosts: 2, stateDir: defaultStateDir() });
    const [a, b] = bed.hosts;
    for (const h of bed.hosts) await bed.assertSafe(h.address);
    server = await startS3Server({ address: bed.info.gateway, buckets: [BUCKET] });
    const seed = tortureSeed();
    console.log(`[torture] ${total} iterations, seed ${seed} (replay with RUNCTL_TORTURE_SEED=${seed})`);
    const hostOf = (h: NonNullable<typeof a>) => ({ host: h.address, port: h.port, username: h.user, privateKeyPath: h.privateKeyPath, knownHostsPath: h.knownHostsPath });
    const targets: TortureTarget[] = [
      { label: "machine", testHost: a!, host: hostOf(a!), storage: { kind: "machine" } },
      { label: "s3", testHost: b!, host: hostOf(b!), storage: { kind: "s3", uri: `s3://${BUCKET}/bench-${seed}`, endpoint: server.endpoint }, s3Server: server },
    ];
    const half = Math.ceil(total / 2);
    const reports = await Promise.all(
      targets.map((t, i) => runTortureLoop(t, { iterations: i === 0 ? half : total - half, seed, log: (l) => console.log(l) })),
    );
    console.log(formatTortureReport(reports));
    return totalViolations(reports) === 0 ? 0 : 1;
  } finally {
    await cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(2);
  },
);
