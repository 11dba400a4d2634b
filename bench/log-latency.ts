/**
 * Benchmark: how long a trainer's log line takes to reach the client as a `log` event, over SSH,
 * against `ssh host tail -F file` reading the same kind of lines in the same run.
 *
 *   npm run bench:log-latency               # = npx tsx bench/log-latency.ts
 *   BENCH_REPS=5 BENCH_LOG_LINES=500 npm run bench:log-latency
 *
 * On one SSH test host (bench/bench-host.ts: its own testbed, network-safety checked), the trainer
 * bench/trainers/log_lines.py prints BENCH_LOG_LINES lines (default 300) every BENCH_LOG_INTERVAL_MS
 * (default 20 ms), each carrying its own `time.time_ns()`. runctl follows the run
 * (`Runctl.instance(sshHosts(host)).sync(...).train(...)`) and the latency of a line is the moment its
 * `log` event reached this process minus the time the trainer printed it. The host is a namespace on
 * this machine without a time namespace, so both times are the same clock. The peer is plain
 * `ssh host 'python3 log_lines.py > f & tail -n +1 -F f'`, timed the same way per line of its stdout.
 * Per repetition each tool runs once (who goes first alternates); the latencies of all repetitions
 * are pooled, and p50/p99 printed (goal: runctl's p99 < 150 ms), then `BENCH_ROW` lines
 * (bench/bench-row.ts). Not a test: nothing here fails a build.
 */
import { spawn } from "node:child_process";
import { cpus } from "node:os";
import { createInterface } from "node:readline";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Runctl, sshHosts, type RunPlan } from "runctl";
import { intEnv, median, printBenchRow, quantile, runBench } from "./bench-row.js";
import { alternate, nowMs, startBenchHost, warmUp, type BenchHost } from "./bench-host.js";

const REPS = intEnv("BENCH_REPS", 3);
const LINES = intEnv("BENCH_LOG_LINES", 300);
const INTERVAL_MS = intEnv("BENCH_LOG_INTERVAL_MS", 20);
/** The trainer waits this long before its first line, so both readers are already reading. */
const DELAY_S = 1;
const P99_GOAL_MS = 150;
const TRAINERS = join(dirname(fileURLToPath(import.meta.url)), "trainers");
const SCRIPT = "log_lines.py";
const LINE = /^BENCH_LOG (\d+) (\d+)$/;

/** The latencies of one run, ms, by line number; lines seen twice are counted. */
interface Sample {
  readonly latencies: number[];
  readonly seen: Set<number>;
  duplicates: number;
}

function record(sample: Sample, line: string, arrived: number): void {
  const m = LINE.exec(line.trim());
  if (!m) return;
  const n = Number(m[1]);
  if (sample.seen.has(n)) sample.duplicates++;
  sample.seen.add(n);
  sample.latencies.push(arrived - Number(m[2]) / 1e6);
}

const newSample = (): Sample => ({ latencies: [], seen: new Set(), duplicates: 0 });
const hyperparams = { lines: LINES, "interval-ms": INTERVAL_MS, "delay-s": DELAY_S };

async function runctlRun(plan: RunPlan): Promise<Sample> {
  const sample = newSample();
  const run = plan.train(SCRIPT, { hyperparams, cleanup: true });
  for await (const event of run) if (event.type === "log") record(sample, event.line, nowMs());
  const result = await run;
  if (result.status !== "succeeded") throw new Error(`runctl run ${run.runId} ended ${result.status}`);
  return sample;
}

async function peerRun(bh: BenchHost, remoteScript: string): Promise<Sample> {
  const sample = newSample();
  const args = `--lines ${LINES} --interval-ms ${INTERVAL_MS} --delay-s ${DELAY_S}`;
  // tail's --pid ends it once the trainer has exited (checked about once a second).
  const remote = `f=$(mktemp) && { python3 '${remoteScript}' ${args} > "$f" 2>&1 & p=$!; tail -n +1 -F --pid=$p "$f" 2>/dev/null; rm -f "$f"; }`;
  const child = spawn("ssh", bh.sshArgs(remote), { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const closed = new Promise<number | null>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", resolve);
  });
  for await (const line of createInterface({ input: child.stdout, crlfDelay: Infinity })) record(sample, line, nowMs());
  const code = await closed;
  if (code !== 0) throw new Error(`ssh ... tail -F exited ${code}: ${err.trim()}`);
  return sample;
}

const ms = (v: number): string => (Number.isFinite(v) ? v.toFixed(1) : "-");

async function main(): Promise<void> {
  const bh = await startBenchHost();
  try {
    const h = bh.testHost;
    console.log(`log latency benchmark: ${LINES} lines every ${INTERVAL_MS} ms on ${h.user}@${h.address} (testbed host over a veth pair, no shaping)`);
    console.log(`${cpus().length} CPUs, Node ${process.version}, ${REPS} repetitions per tool, latencies pooled\n`);
    const plan = Runctl.instance(sshHosts(bh.host)).sync(TRAINERS);
    // Warm-up, not timed: agent install, code sync, interpreter and page cache; the peer's script copy.
    await warmUp(plan, SCRIPT, { hyperparams: { lines: 5, "interval-ms": 10, "delay-s": 0 } });
    const remoteScript = await bh.upload(join(TRAINERS, SCRIPT));

    const { runctl, peer } = await alternate(REPS, () => runctlRun(plan), () => peerRun(bh, remoteScript), (rep, r, p) => {
      console.log(
        `  repetition ${rep + 1}/${REPS}: runctl p50 ${ms(median(r.latencies))} p99 ${ms(quantile(r.latencies, 0.99))} ms (${r.seen.size}/${LINES} lines), ` +
          `ssh+tail -F p50 ${ms(median(p.latencies))} p99 ${ms(quantile(p.latencies, 0.99))} ms (${p.seen.size}/${LINES} lines)`,
      );
      for (const [name, s] of [["runctl", r], ["ssh+tail -F", p]] as const) {
        if (s.seen.size !== LINES || s.duplicates > 0) console.log(`    note: ${name} saw ${s.seen.size} of ${LINES} lines, ${s.duplicates} twice`);
      }
    });

    const all = (xs: readonly Sample[]): number[] => xs.flatMap((s) => s.latencies);
    const a = all(runctl);
    const b = all(peer);
    const rows = [
      { name: "p50", q: 0.5, goal: "" },
      { name: "p99", q: 0.99, goal: `< ${P99_GOAL_MS} ms` },
      { name: "max", q: 1, goal: "" },
    ];
    const header = ["latency", "runctl ms", "ssh+tail -F ms", "runctl/peer", "goal", "met"];
    const lines = rows.map((r) => {
      const x = quantile(a, r.q);
      const y = quantile(b, r.q);
      return [r.name, ms(x), ms(y), `${(x / y).toFixed(1)}x`, r.goal, r.goal ? (x < P99_GOAL_MS ? "yes" : "NO") : ""];
    });
    const widths = header.map((hd, i) => Math.max(hd.length, ...lines.map((l) => l[i]!.length)));
    const fmt = (cells: readonly string[]): string =>
      cells
        .map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
        .join("  ")
        .trimEnd();
    console.log("");
    console.log(fmt(header));
    console.log(widths.map((w) => "-".repeat(w)).join("  "));
    for (const l of lines) console.log(fmt(l));
    console.log(`\n(${a.length} runctl and ${b.length} peer lines; min ${ms(Math.min(...a))} / ${ms(Math.min(...b))} ms)\n`);
    for (const r of rows.slice(0, 2)) {
      const x = quantile(a, r.q);
      const y = quantile(b, r.q);
      printBenchRow({
        bench: "log-latency",
        row: `log line -> client, ${r.name}`,
        value: x,
        unit: "ms",
        peer: y,
        ratio: x / y,
        goal: r.goal,
        met: r.goal ? (Number.isFinite(x) ? x < P99_GOAL_MS : null) : null,
      });
    }
  } finally {
    await bh.stop();
  }
}

runBench(main);
