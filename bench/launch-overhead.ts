/**
 * Benchmark: launch overhead on a ready host — from the `.train()` call to the trainer's first line,
 * with the agent already installed and the code already synced (nothing to send, no `.setup()`),
 * against plain `ssh host python3 script.py` in the same run.
 *
 *   npm run bench:launch                    # = npx tsx bench/launch-overhead.ts
 *   BENCH_REPS=9 npm run bench:launch
 *
 * On one SSH test host (bench/bench-host.ts: its own testbed, network-safety checked), an untimed
 * warm-up run installs the agent and syncs bench/trainers/. Then, per repetition (who goes first
 * alternates): runctl `Runctl.instance(sshHosts(host)).sync(trainers).train("first_line.py")`, and
 * `ssh host python3 first_line.py`. first_line.py prints `time.time_ns()` as its first statement;
 * the figure is that time minus the moment the `.train()` call (or the ssh spawn) began. The host is
 * a namespace on this machine without a time namespace, so both are the same clock. The figure does
 * not include the line's way back to the client (bench/log-latency.ts measures that).
 *
 * Prints the median over BENCH_REPS (default 5; goal < 1.0 s), runctl's parts (from the run's phase
 * events, the client's clock, ms resolution), then a `BENCH_ROW` line (bench/bench-row.ts).
 * Not a test: nothing here fails a build.
 */
import { spawn } from "node:child_process";
import { cpus } from "node:os";
import { createInterface } from "node:readline";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Runctl, sshHosts, type RunEvent, type RunPlan } from "runctl";
import { intEnv, median, printBenchRow, runBench } from "./bench-row.js";
import { alternate, nowMs, startBenchHost, warmUp, type BenchHost } from "./bench-host.js";

const REPS = intEnv("BENCH_REPS", 5);
const GOAL_MS = 1000;
const TRAINERS = join(dirname(fileURLToPath(import.meta.url)), "trainers");
const SCRIPT = "first_line.py";
const LINE = /^BENCH_START (\d+)$/;

/** One runctl launch: the total and its parts, ms. */
interface RunctlSample {
  readonly total: number;
  /** `.train()` -> phase syncing (provider, connection, agent check). */
  readonly provision: number;
  /** phase syncing -> the `sync` event (the sync with nothing to send). */
  readonly sync: number;
  /** The `sync` event -> the trainer's first line (run staged, agent launched, trainer's Python started). */
  readonly start: number;
  /** The trainer's first line -> its `log` event at the client. */
  readonly lineBack: number;
}

async function runctlLaunch(plan: RunPlan): Promise<RunctlSample> {
  const t0 = nowMs();
  const run = plan.train(SCRIPT, { cleanup: true });
  let printed: number | undefined;
  let arrived: number | undefined;
  const events: RunEvent[] = [];
  for await (const event of run) {
    events.push(event);
    if (event.type !== "log" || printed !== undefined) continue;
    const m = LINE.exec(event.line.trim());
    if (m) {
      arrived = nowMs();
      printed = Number(m[1]) / 1e6;
    }
  }
  const result = await run;
  if (result.status !== "succeeded") throw new Error(`runctl run ${run.runId} ended ${result.status}`);
  if (printed === undefined || arrived === undefined) throw new Error(`runctl run ${run.runId}: the trainer's first line never arrived`);
  const phaseAt = (p: string): number => {
    const e = events.find((x) => x.type === "phase" && x.phase === p);
    return e ? Date.parse(e.time) : NaN;
  };
  // The client's own events mark these boundaries; `phase: training` comes from the agent's
  // follower, after the trainer has started, so it is no boundary here.
  const syncing = phaseAt("syncing");
  const synced = events.find((x) => x.type === "sync");
  const syncedAt = synced ? Date.parse(synced.time) : NaN;
  return {
    total: printed - t0,
    provision: syncing - t0,
    sync: syncedAt - syncing,
    start: printed - syncedAt,
    lineBack: arrived - printed,
  };
}

async function sshLaunch(bh: BenchHost, remoteScript: string): Promise<number> {
  const t0 = nowMs();
  const child = spawn("ssh", bh.sshArgs(`python3 '${remoteScript}'`), { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const closed = new Promise<number | null>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", resolve);
  });
  let printed: number | undefined;
  for await (const line of createInterface({ input: child.stdout, crlfDelay: Infinity })) {
    const m = LINE.exec(line.trim());
    if (m && printed === undefined) printed = Number(m[1]) / 1e6;
  }
  const code = await closed;
  if (code !== 0 || printed === undefined) throw new Error(`ssh python3 ${remoteScript} exited ${code}: ${err.trim()}`);
  return printed - t0;
}

const fmtMs = (v: number): string => (Number.isFinite(v) ? v.toFixed(0) : "-");

async function main(): Promise<void> {
  const bh = await startBenchHost();
  try {
    const h = bh.testHost;
    console.log(`launch overhead benchmark: ${SCRIPT} on ${h.user}@${h.address} (testbed host, agent installed and code synced by a warm-up run)`);
    console.log(`${cpus().length} CPUs, Node ${process.version}, ${REPS} repetitions per tool, medians\n`);
    const plan = Runctl.instance(sshHosts(bh.host)).sync(TRAINERS);
    // Warm-up, not timed: agent install, code sync, page cache; the peer's copy of the script and one ssh.
    await warmUp(plan, SCRIPT);
    const remoteScript = await bh.upload(join(TRAINERS, SCRIPT));
    await sshLaunch(bh, remoteScript);

    const { runctl, peer: ssh } = await alternate(REPS, () => runctlLaunch(plan), () => sshLaunch(bh, remoteScript), (rep, r, s) =>
      console.log(
        `  repetition ${rep + 1}/${REPS}: runctl ${fmtMs(r.total)} ms (provision ${fmtMs(r.provision)}, sync ${fmtMs(r.sync)}, start ${fmtMs(r.start)}; line back ${fmtMs(r.lineBack)}), ssh ${fmtMs(s)} ms`,
      ),
    );

    const total = median(runctl.map((r) => r.total));
    const peer = median(ssh);
    const part = (k: keyof RunctlSample): string => fmtMs(median(runctl.map((r) => r[k])));
    console.log("");
    console.log("part                                   median ms  what");
    console.log("-------------------------------------  ---------  ------------------------------------------------------------");
    console.log(`provision                              ${part("provision").padStart(9)}  .train() -> phase syncing: connection, agent check`);
    console.log(`sync (nothing to send)                 ${part("sync").padStart(9)}  phase syncing -> sync event: scan, manifest compare on the host`);
    console.log(`start                                  ${part("start").padStart(9)}  sync event -> trainer's first line: run staged, agent launch, Python start`);
    console.log(`= .train() -> trainer's first line     ${fmtMs(total).padStart(9)}  goal < ${GOAL_MS / 1000} s: ${total < GOAL_MS ? "yes" : "NO"}`);
    console.log(`ssh host python3 first_line.py         ${fmtMs(peer).padStart(9)}  peer: new ssh connection, Python start`);
    console.log(`(reference) line back to the client    ${part("lineBack").padStart(9)}  trainer's first line -> its log event`);
    console.log("\nsamples (ms):");
    console.log(`  runctl ${JSON.stringify(runctl.map((r) => Math.round(r.total)))}  ssh ${JSON.stringify(ssh.map((x) => Math.round(x)))}\n`);
    printBenchRow({
      bench: "launch",
      row: "launch on a ready host (.train() -> first line)",
      value: total,
      unit: "ms",
      peer,
      ratio: total / peer,
      goal: `< ${GOAL_MS} ms`,
      met: Number.isFinite(total) ? total < GOAL_MS : null,
    });
  } finally {
    await bh.stop();
  }
}

runBench(main);
