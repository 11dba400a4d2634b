/**
 * Benchmark: how long a spot interruption costs. A run on a pool of two SSH test hosts, with 100 MiB
 * checkpoints in S3 (s3rver on the testbed bridge), gets a spot interruption notice on its host's
 * (fake) instance-metadata service mid-run; runctl's agent stops the trainer, commits the final
 * checkpoint, and the client resumes the run on the other host from it.
 *
 *   npm run bench:spot                      # = npx tsx bench/spot-recovery.ts
 *   BENCH_REPS=5 npm run bench:spot
 *   BENCH_IMDS_POLL_MS=200 npm run bench:spot
 *
 * Per repetition it measures, from the moment the notice is set on the metadata service:
 *   notice -> final checkpoint committed   = detect + flush + commit               (goal < 2.5 s)
 *   notice -> training resumed elsewhere   = the above + hand-over + provision + sync + setup
 *                                            + restore + first step                 (goal < 5 s)
 * and prints the median of every part and of both totals, then the two totals as `BENCH_ROW` lines
 * (bench/bench-row.ts). Not a test: nothing here fails a build.
 *
 * Clocks: the on-machine parts (detect, flush, commit) come from the agent's own event log on the
 * interrupted host (`<home>/.runctl/runs/<runId>/events.jsonl`, read through the testbed's folder on
 * this machine: its `time` fields and the checkpoint's `durationMs`); the rest from the run's
 * RunEvent `time` fields (the client's clock). The test hosts are namespaces on this machine with no
 * time namespace, so both are the same clock. The client-side view of the first three parts (when
 * the events reached the client) is printed for reference.
 *
 * Every repetition starts from fresh hosts: `~/.runctl` (agent, code mirror, venvs, runs) is removed
 * on both hosts before it, as on a new spot instance.
 *
 * Safety: it connects only to the addresses of the hosts it has just created, after checking that
 * they route through the testbed's own bridge (see test/testbed/net-guard.ts); the metadata services
 * and the S3 server listen on the bridge's own address.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { type RunEvent, type RunResult, type SshHost, type Storage } from "runctl";
import { s3 } from "runctl/aws";
import { main as spotRecovery } from "../examples/spot-recovery.js";
import { startImds, type TestImds } from "../test/support/imds-server.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../test/support/s3-server.js";
import { defaultStateDir } from "../test/testbed/global-setup.js";
import { startTestbed, type Testbed, type TestHost } from "../test/testbed/testbed.js";
import { intEnv, printBenchRow, runBench } from "./bench-row.js";

const REPS = intEnv("BENCH_REPS", 3);
/** How often the agent polls the metadata service; unset: runctl's own default (the bench measures the default). */
const IMDS_POLL_MS: number | undefined = process.env["BENCH_IMDS_POLL_MS"] ? intEnv("BENCH_IMDS_POLL_MS", 5000) : undefined;
const BALLAST_MB = intEnv("BENCH_BALLAST_MB", 100);
// The notice comes a few steps after the first periodic checkpoint (step 50) is committed; with up to
// 5 s (25 steps) to detect it, the trainer saves on SIGTERM well before the next one (step 100, the
// end), so no periodic upload overlaps the measured one.
const STEPS = 100;
const CHECKPOINT_EVERY = 50;
const SLEEP_PER_STEP = 0.2;
/** The notice's `time`: AWS gives two minutes. The agent flushes until `time - 20 s`. */
const NOTICE_SECONDS = 120;
/** Goals of issue 15 for a 100 MiB checkpoint (the default BENCH_BALLAST_MB). */
const COMMITTED_GOAL_MS = 2_500;
const RESUMED_GOAL_MS = 5_000;
const BUCKET = "runctl-bench";

/** One agent event from a run's events.jsonl. */
interface AgentEvent {
  readonly type: string;
  readonly time: string;
  readonly [key: string]: unknown;
}

/** The boundaries of one repetition, epoch ms (undefined: not seen). */
interface Sample {
  readonly notice: number;
  // On the interrupted machine (agent clock).
  readonly agentInterruption: number | undefined;
  readonly commitStart: number | undefined;
  readonly committed: number | undefined;
  readonly flushMs: number | undefined;
  readonly checkpointBytes: number | undefined;
  // Seen by the client.
  readonly clientInterruption: number | undefined;
  readonly clientHandled: number | undefined;
  readonly clientCheckpoint: number | undefined;
  readonly recovering: number | undefined;
  readonly provisioning: number | undefined;
  readonly syncing: number | undefined;
  readonly setup: number | undefined;
  readonly data: number | undefined;
  readonly resumed: number | undefined;
  readonly firstMetric: number | undefined;
  readonly noticeStep: number | undefined;
  readonly resumedStep: number | null | undefined;
  readonly lostSteps: number | null | undefined;
}

function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const timeOf = (e: { readonly time: string }): number => Date.parse(e.time);

/** `to - from` when both are known. */
const span = (from: number | undefined, to: number | undefined): number | undefined => (from !== undefined && to !== undefined ? to - from : undefined);

function readAgentEvents(h: TestHost, runId: string): AgentEvent[] {
  const path = join(h.home, ".runctl", "runs", runId, "events.jsonl");
  if (!existsSync(path)) return [];
  const out: AgentEvent[] = [];
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as AgentEvent);
    } catch {
      // a torn last line: ignore
    }
  }
  return out;
}

/** Picks the boundaries out of the client's events and the interrupted host's agent events. */
function analyse(notice: number, noticeStep: number | undefined, events: readonly RunEvent[], agent: readonly AgentEvent[], result: RunResult): Sample {
  // Agent side: the notice, the final checkpoint (named by interruption-handled), its upload time.
  const aInt = agent.find((e) => e.type === "interruption");
  const handled = agent.find((e) => e.type === "interruption-handled");
  const finalName = typeof handled?.["checkpoint"] === "string" ? handled["checkpoint"] : undefined;
  const aCkpt = agent.find((e) => e.type === "checkpoint" && e["name"] === finalName && (!aInt || timeOf(e) >= timeOf(aInt)));
  const committed = aCkpt ? timeOf(aCkpt) : undefined;
  const uploadMs = typeof aCkpt?.["durationMs"] === "number" ? aCkpt["durationMs"] : undefined;

  // Client side, in event order.
  const idx = (pred: (e: RunEvent) => boolean, from = 0): number => {
    for (let i = from; i < events.length; i++) if (pred(events[i]!)) return i;
    return -1;
  };
  const at = (i: number): number | undefined => (i >= 0 ? timeOf(events[i]!) : undefined);
  const cInt = idx((e) => e.type === "interruption");
  const cHandled = idx((e) => e.type === "warning" && e.code === "INTERRUPTION_HANDLED");
  const cCkpt = finalName ? idx((e) => e.type === "checkpoint" && e.name === finalName, Math.max(0, cInt)) : -1;
  const rec = idx((e) => e.type === "phase" && e.phase === "recovering");
  const after = rec >= 0 ? rec : events.length;
  const phase = (p: string): number => idx((e) => e.type === "phase" && e.phase === p, after);
  const resumed = idx((e) => e.type === "resumed", after);
  const recovered = idx((e) => e.type === "recovered", after);
  const firstMetric = recovered >= 0 ? idx((e) => e.type === "metric", recovered) : -1;
  const resumedEvent = resumed >= 0 ? events[resumed] : undefined;
  const interruption = result.interruptions[0];
  return {
    notice,
    agentInterruption: aInt ? timeOf(aInt) : undefined,
    commitStart: committed !== undefined && uploadMs !== undefined ? committed - uploadMs : undefined,
    committed,
    flushMs: typeof handled?.["flushMs"] === "number" ? handled["flushMs"] : undefined,
    checkpointBytes: typeof aCkpt?.["bytes"] === "number" ? aCkpt["bytes"] : undefined,
    clientInterruption: at(cInt),
    clientHandled: at(cHandled),
    clientCheckpoint: at(cCkpt),
    recovering: at(rec),
    provisioning: at(phase("provisioning")),
    syncing: at(phase("syncing")),
    setup: at(phase("setup")),
    data: at(phase("data")),
    resumed: at(resumed),
    firstMetric: at(firstMetric),
    noticeStep,
    resumedStep: resumedEvent?.type === "resumed" ? resumedEvent.step : undefined,
    lostSteps: interruption?.lostSteps,
  };
}

interface Part {
  readonly name: string;
  readonly what: string;
  readonly of: (s: Sample) => number | undefined;
  readonly goalMs?: number;
  readonly total?: boolean;
  readonly reference?: boolean;
  /** The `BENCH_ROW` name of a total. */
  readonly row?: string;
}

/**
 * Contiguous parts: each ends where the next begins, so a repetition's parts add up to its totals.
 * A boundary that was not seen makes its two parts unknown (printed as "-").
 */
const PARTS: readonly Part[] = [
  { name: "detect", what: "notice set on the IMDS -> agent's interruption event", of: (s) => span(s.notice, s.agentInterruption) },
  { name: "flush", what: "SIGTERM, trainer finishes its step, writes the checkpoint, exits", of: (s) => span(s.agentInterruption, s.commitStart) },
  { name: "commit", what: "upload of the final checkpoint (manifest and LATEST included)", of: (s) => span(s.commitStart, s.committed) },
  { name: "notice -> committed", row: `spot notice -> final ${BALLAST_MB} MiB checkpoint committed`, what: "final checkpoint visible in S3", of: (s) => span(s.notice, s.committed), goalMs: COMMITTED_GOAL_MS, total: true },
  { name: "hand-over", what: "agent's exit reaches the client -> phase recovering", of: (s) => span(s.committed, s.recovering) },
  { name: "provision", what: "release, backoff (1 s), newest checkpoint, connect next host", of: (s) => span(s.recovering, s.syncing) },
  { name: "sync", what: "code sync, agent install and launch -> phase setup", of: (s) => span(s.syncing, s.setup) },
  { name: "setup", what: "Python environment -> phase data", of: (s) => span(s.setup, s.data) },
  { name: "restore", what: "download and verify the checkpoint -> resumed", of: (s) => span(s.data, s.resumed) },
  { name: "first step", what: "trainer start, load, first step -> first metric", of: (s) => span(s.resumed, s.firstMetric) },
  { name: "notice -> resumed", row: "spot notice -> first step on the next host", what: "first training step on the next host", of: (s) => span(s.notice, s.firstMetric), goalMs: RESUMED_GOAL_MS, total: true },
  { name: "(client) notice -> interruption", what: "the interruption event as the client got it", of: (s) => span(s.notice, s.clientInterruption), reference: true },
  { name: "(client) notice -> committed", what: "the final checkpoint event as the client got it", of: (s) => span(s.notice, s.clientCheckpoint), reference: true },
  { name: "(agent) flushMs", what: "interruption-handled: notice arrival -> handled (commit included)", of: (s) => s.flushMs, reference: true },
  { name: "(of provision) backoff", what: "phase recovering -> phase provisioning", of: (s) => span(s.recovering, s.provisioning), reference: true },
];

const seconds = (ms: number): string => (ms / 1000).toFixed(2);

function printTable(samples: readonly Sample[]): void {
  const header = ["part", "median s", "min s", "max s", "goal", "met", "what"];
  const rows: string[][] = [];
  for (const p of PARTS) {
    const values = samples.map(p.of).filter((v): v is number => v !== undefined);
    if (p.reference && rows.length > 0 && !rows[rows.length - 1]![0]!.startsWith("(")) rows.push(["", "", "", "", "", "", ""]);
    if (values.length === 0) {
      rows.push([p.name, "-", "-", "-", p.goalMs ? `< ${p.goalMs / 1000} s` : "", p.goalMs ? "?" : "", p.what]);
      continue;
    }
    const m = median(values);
    const met = p.goalMs === undefined ? "" : values.length < samples.length ? "?" : m < p.goalMs ? "yes" : "NO";
    rows.push([p.total ? `= ${p.name}` : p.name, seconds(m), seconds(Math.min(...values)), seconds(Math.max(...values)), p.goalMs ? `< ${p.goalMs / 1000} s` : "", met, p.what]);
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const fmt = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === 0 || i === cells.length - 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join("  ")
      .trimEnd();
  console.log(fmt(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of rows) console.log(fmt(r));
}

/** The two totals as `BENCH_ROW` lines, in seconds (no peer tool runs here). */
function printBenchRows(samples: readonly Sample[]): void {
  for (const p of PARTS) {
    if (!p.row || p.goalMs === undefined) continue;
    const values = samples.map(p.of).filter((v): v is number => v !== undefined);
    const m = median(values);
    const met = values.length === samples.length && values.length > 0 ? m < p.goalMs : null;
    printBenchRow({ bench: "spot", row: p.row, value: m / 1000, unit: "s", peer: null, ratio: null, goal: `< ${p.goalMs / 1000} s`, met });
  }
}

async function main(): Promise<void> {
  const stateDir = defaultStateDir();
  const runctlHome = mkdtempSync(join(tmpdir(), "runctl-bench-home-"));
  process.env["RUNCTL_HOME"] = runctlHome;
  let bed: Testbed | undefined;
  let server: TestS3Server | undefined;
  const imds: TestImds[] = [];
  const cleanup = async (): Promise<void> => {
    await Promise.all(imds.map((i) => i.stop().catch(() => {})));
    await server?.stop().catch(() => {});
    await bed?.stop().catch(() => {});
    rmSync(runctlHome, { recursive: true, force: true });
  };
  process.once("SIGINT", () => void cleanup().finally(() => process.exit(130)));
  try {
    bed = await startTestbed({ hosts: 2, stateDir });
    const testHosts = bed.hosts;
    for (const h of testHosts) await bed.assertSafe(h.address);
    const gateway = bed.info.gateway;
    for (const _ of testHosts) imds.push(await startImds(gateway));
    server = await startS3Server({ address: gateway, buckets: [BUCKET] });
    const s = server;
    const hosts: SshHost[] = testHosts.map((h, i) => ({
      host: h.address,
      port: h.port,
      username: h.user,
      privateKeyPath: h.privateKeyPath,
      knownHostsPath: h.knownHostsPath,
      imdsEndpoint: imds[i]!.endpoint,
      ...(IMDS_POLL_MS !== undefined ? { imdsPollMs: IMDS_POLL_MS } : {}),
    }));
    const storage = (prefix: string): Storage => s3(`s3://${BUCKET}/${prefix}`, { ...S3RVER_CLIENT_SETTINGS, endpoint: s.endpoint, credentials: TEST_AWS_CREDENTIALS });

    console.log(
      `spot recovery benchmark: 2 testbed hosts (${testHosts.map((h) => h.address).join(", ")}), checkpoints of ${BALLAST_MB} MiB + model in s3rver on ${gateway}`,
    );
    console.log(
      `${cpus().length} CPUs, Node ${process.version}; trainer: ${STEPS} steps, ${SLEEP_PER_STEP} s/step, checkpoint every ${CHECKPOINT_EVERY}; IMDS polled every ${IMDS_POLL_MS !== undefined ? `${IMDS_POLL_MS} ms` : "(runctl's default)"}; ${REPS} repetitions, medians\n`,
    );

    const samples: Sample[] = [];
    for (let rep = 0; rep < REPS; rep++) {
      // Fresh machines: nothing of runctl's left on either host (agent, code mirror, venvs, runs).
      for (const h of testHosts) rmSync(join(h.home, ".runctl"), { recursive: true, force: true });
      imds.forEach((i) => i.clear());

      let notice: number | undefined;
      let noticeStep: number | undefined;
      let noticeHost: TestHost | undefined;
      let periodicCommitted = false;
      const started = Date.now();
      const { runId, result, events } = await spotRecovery({
        hosts,
        storage: storage(`rep-${rep}`),
        verbose: false,
        hyperparams: { steps: STEPS, "checkpoint-every": CHECKPOINT_EVERY, "sleep-per-step": SLEEP_PER_STEP, "ballast-mb": BALLAST_MB },
        onEvent: (event) => {
          // The notice comes once the first periodic checkpoint is committed, so no upload is under way.
          if (event.type === "checkpoint" && notice === undefined) periodicCommitted = true;
          if (event.type === "metric" && periodicCommitted && notice === undefined) {
            // The host the run is on: the one whose home holds the run's folder.
            const i = testHosts.findIndex((h) => existsSync(join(h.home, ".runctl", "runs", event.runId)));
            noticeHost = testHosts[i >= 0 ? i : 0];
            imds[i >= 0 ? i : 0]!.interruptIn(NOTICE_SECONDS);
            notice = Date.now();
            noticeStep = event.step;
          }
          // The next host must not see the same notice.
          if (event.type === "phase" && event.phase === "recovering") imds.forEach((i) => i.clear());
        },
      });
      imds.forEach((i) => i.clear());
      if (notice === undefined || !noticeHost) throw new Error(`repetition ${rep + 1}: the run ended (${result.status}) before the notice was given`);
      if (result.status !== "succeeded" || result.restarts !== 1) {
        const tail = events.slice(-15).map((e) => `${e.type}${e.type === "phase" ? ` ${e.phase}` : ""}${e.type === "warning" ? `: ${e.message}` : ""}`);
        throw new Error(`repetition ${rep + 1}: run ${runId} ended ${result.status} after ${result.restarts} restart(s)\n  ${tail.join("\n  ")}`);
      }
      const sample = analyse(notice, noticeStep, events, readAgentEvents(noticeHost, runId), result);
      samples.push(sample);
      const f = (v: number | undefined): string => (v === undefined ? "-" : `${seconds(v)} s`);
      console.log(
        `  repetition ${rep + 1}/${REPS}: notice at step ${sample.noticeStep ?? "?"} on ${noticeHost.address}, resumed from step ${sample.resumedStep ?? "?"} ` +
          `(lost ${sample.lostSteps ?? "?"}), final checkpoint ${sample.checkpointBytes !== undefined ? `${(sample.checkpointBytes / 1024 / 1024).toFixed(1)} MiB` : "?"}; ` +
          `committed ${f(span(sample.notice, sample.committed))}, resumed ${f(span(sample.notice, sample.firstMetric))}; run took ${seconds(Date.now() - started)} s`,
      );
      if (sample.commitStart !== undefined && sample.agentInterruption !== undefined && sample.commitStart < sample.agentInterruption) {
        console.log("    note: the final checkpoint was a periodic one whose upload began before the notice was seen (flush < 0)");
      }
    }

    console.log("");
    printTable(samples);
    console.log("\nsamples (s):");
    for (const p of PARTS) {
      const v = samples.map(p.of).map((x) => (x === undefined ? null : Number(seconds(x))));
      console.log(`  ${p.name.padEnd(32)} ${JSON.stringify(v)}`);
    }
    console.log("");
    printBenchRows(samples);
  } finally {
    await cleanup();
  }
}

runBench(main);
