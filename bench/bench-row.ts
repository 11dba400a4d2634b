/**
 * The common result line of every benchmark: besides its human table, a bench prints one
 * `BENCH_ROW {json}` line per row, which `npm run bench` (bench/run-all.ts) collects from its stdout
 * into one summary table.
 */

/** The prefix `bench/run-all.ts` looks for at the start of a line. */
export const BENCH_ROW_PREFIX = "BENCH_ROW ";

/** One row of a benchmark's result. */
export interface BenchRow {
  /** The benchmark, e.g. `"sync"`. */
  readonly bench: string;
  /** The row, e.g. `"first sync"`. */
  readonly row: string;
  /** runctl's figure (a median unless the row says otherwise). */
  readonly value: number;
  /** Unit of `value` and `peer`: `"ms"`, `"s"`, `"MB/s"`, `"MB"`, `"x"`, ... */
  readonly unit: string;
  /** The peer tool's figure from the same run, in `unit`; null when no peer runs. */
  readonly peer: number | null;
  /** `value / peer` (below 1 is better for times, above 1 for throughput); null without a peer. */
  readonly ratio: number | null;
  /** The goal as text, e.g. `"<= 0.8x"`, `"< 150 ms"`; empty for a reference row. */
  readonly goal: string;
  /** Whether the goal is met; null for a reference row or when the figure is missing. */
  readonly met: boolean | null;
}

/** Rounds to 3 significant decimals so the line stays readable; keeps non-finite values out of JSON. */
function tidy(v: number | null): number | null {
  if (v === null || !Number.isFinite(v)) return null;
  return Math.round(v * 1000) / 1000;
}

/** Prints `row` as one `BENCH_ROW {json}` line on stdout. */
export function printBenchRow(row: BenchRow): void {
  const line = { ...row, value: tidy(row.value), peer: tidy(row.peer), ratio: tidy(row.ratio) };
  process.stdout.write(`${BENCH_ROW_PREFIX}${JSON.stringify(line)}\n`);
}

/** Parses a `BENCH_ROW {json}` line; undefined for any other line or a malformed one. */
export function parseBenchRow(line: string): BenchRow | undefined {
  if (!line.startsWith(BENCH_ROW_PREFIX)) return undefined;
  try {
    const v = JSON.parse(line.slice(BENCH_ROW_PREFIX.length)) as Partial<BenchRow>;
    if (typeof v.bench !== "string" || typeof v.row !== "string") return undefined;
    return {
      bench: v.bench,
      row: v.row,
      value: typeof v.value === "number" ? v.value : NaN,
      unit: typeof v.unit === "string" ? v.unit : "",
      peer: typeof v.peer === "number" ? v.peer : null,
      ratio: typeof v.ratio === "number" ? v.ratio : null,
      goal: typeof v.goal === "string" ? v.goal : "",
      met: typeof v.met === "boolean" ? v.met : null,
    };
  } catch {
    return undefined;
  }
}

/** The median of `values` (NaN when empty). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** The `q`-quantile of `values` (0..1), nearest rank; NaN when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const rank = Math.min(s.length, Math.max(1, Math.ceil(q * s.length)));
  return s[rank - 1]!;
}

/** A positive whole number from the environment (`BENCH_REPS=5`), else `fallback`. */
export function intEnv(name: string, fallback: number): number {
  const v = Math.floor(Number(process.env[name] ?? String(fallback)));
  return Number.isFinite(v) && v > 0 ? v : fallback;
}

/** Runs a bench's `main` and exits: 0 when it resolved, 1 (the error printed) when it threw. */
export function runBench(main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
