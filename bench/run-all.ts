/**
 * `npm run bench`: runs every benchmark, one after the other, passes their output through, collects
 * the `BENCH_ROW` lines (bench/bench-row.ts) from their stdout and prints one summary table: bench,
 * row, runctl's figure, the peer's figure from the same run, the ratio, the goal, met or not.
 *
 *   npm run bench                         # all of them
 *   npm run bench -- sync launch          # only these (names as in the table below)
 *   BENCH_REPS=3 npm run bench            # passed on to every bench
 *   BENCH_SUMMARY_JSON=out.json npm run bench   # also write the rows as JSON
 *
 * A missed goal fails nothing (read the table); a bench that exits non-zero, or prints no row, is
 * listed as failed and makes this exit 1. A bench whose file is missing (bench/startup.ts comes with
 * its own change) is listed as skipped.
 */
import { spawn } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseBenchRow, type BenchRow } from "./bench-row.js";
import { buildDist } from "./build-dist.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Every benchmark `npm run bench` runs, in order: cheap ones first. */
const BENCHES: readonly { readonly name: string; readonly file: string; readonly timesDist?: true }[] = [
  { name: "startup", file: "bench/startup.ts", timesDist: true },
  { name: "sync", file: "bench/sync-vs-rsync.ts" },
  { name: "launch", file: "bench/launch-overhead.ts" },
  { name: "log-latency", file: "bench/log-latency.ts" },
  { name: "s3", file: "bench/s3-vs-aws-cli.ts", timesDist: true },
  { name: "spot", file: "bench/spot-recovery.ts" },
  { name: "multi-node", file: "bench/multi-node-recovery.ts" },
];

interface Outcome {
  readonly name: string;
  readonly status: "ok" | "failed" | "skipped";
  readonly note: string;
  readonly seconds: number;
  readonly rows: BenchRow[];
}

/** Runs one bench under the same Node (and tsx loader) as this process; echoes its output. */
async function runBench(name: string, file: string): Promise<Outcome> {
  const path = join(ROOT, file);
  if (!existsSync(path)) return { name, status: "skipped", note: `${file} not present`, seconds: 0, rows: [] };
  console.log(`\n=== ${name}: ${file} ===\n`);
  const started = performance.now();
  // dist/ is built once in main(), before the first bench that times it.
  const child = spawn(process.execPath, [...process.execArgv, path], { cwd: ROOT, env: { ...process.env, BENCH_BUILD: "0" }, stdio: ["ignore", "pipe", "inherit"] });
  const rows: BenchRow[] = [];
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal }));
  });
  for await (const line of createInterface({ input: child.stdout, crlfDelay: Infinity })) {
    console.log(line);
    const row = parseBenchRow(line);
    if (row) rows.push(row);
  }
  const { code, signal } = await closed;
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0) return { name, status: "failed", note: signal ? `killed by ${signal}` : `exit ${code}`, seconds, rows };
  if (rows.length === 0) return { name, status: "failed", note: "printed no BENCH_ROW line", seconds, rows };
  return { name, status: "ok", note: "", seconds, rows };
}

/** A figure with about three significant digits. */
function num(v: number | null): string {
  if (v === null || !Number.isFinite(v)) return "-";
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function printSummary(outcomes: readonly Outcome[]): void {
  const header = ["bench", "row", "figure", "peer", "ratio", "goal", "met"];
  const lines: string[][] = [];
  for (const o of outcomes) {
    for (const r of o.rows) {
      lines.push([
        r.bench,
        r.row,
        `${num(r.value)} ${r.unit}`,
        r.peer === null ? "" : `${num(r.peer)} ${r.unit}`,
        r.ratio === null ? "" : `${r.ratio.toFixed(2)}x`,
        r.goal,
        r.met === null ? (r.goal ? "?" : "") : r.met ? "yes" : "NO",
      ]);
    }
    if (o.status !== "ok") lines.push([o.name, o.status === "skipped" ? `skipped: ${o.note}` : `FAILED: ${o.note}`, "", "", "", "", o.status === "failed" ? "NO" : ""]);
  }
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const right = new Set([2, 3, 4]);
  const fmt = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  console.log(fmt(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const l of lines) console.log(fmt(l));
  const goals = outcomes.flatMap((o) => o.rows).filter((r) => r.goal !== "");
  const met = goals.filter((r) => r.met === true).length;
  const times = outcomes.filter((o) => o.status !== "skipped").map((o) => `${o.name} ${o.seconds.toFixed(0)} s`);
  console.log(`\n${met} of ${goals.length} goals met${times.length > 0 ? `; ${times.join(", ")}` : ""}`);
}

async function main(): Promise<number> {
  const only = process.argv.slice(2);
  const unknown = only.filter((n) => !BENCHES.some((b) => b.name === n));
  if (unknown.length > 0) {
    console.error(`unknown bench(es): ${unknown.join(", ")}; known: ${BENCHES.map((b) => b.name).join(", ")}`);
    return 2;
  }
  const selected = BENCHES.filter((b) => only.length === 0 || only.includes(b.name));
  // The benches that time the built package would each build it: once here, for all of them.
  if (selected.some((b) => b.timesDist)) buildDist(ROOT);
  const outcomes: Outcome[] = [];
  for (const b of selected) {
    outcomes.push(await runBench(b.name, b.file));
  }
  console.log("\n=== summary ===\n");
  printSummary(outcomes);
  const json = process.env["BENCH_SUMMARY_JSON"];
  if (json) writeFileSync(json, `${JSON.stringify(outcomes, null, 2)}\n`);
  return outcomes.some((o) => o.status === "failed") ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
