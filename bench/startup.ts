/**
 * Benchmark: what loading runctl costs a process. Times, as whole processes (spawn to exit), the
 * median over repetitions of
 *
 *   node -e 0                                                   (the floor: Node itself)
 *   node --input-type=module -e 'await import(".../dist/index.js")'   (`import("runctl")`)
 *   node dist/cli.js --version
 *   node dist/cli.js ls          (RUNCTL_HOME: a temporary folder with a few journals and ledger lines)
 *
 * and prints each one's median minus the floor's, against the goals (issue 15): the import under
 * 150 ms, `--version` and `ls` under 300 ms. The cases take turns within each repetition, so a load
 * change on the machine hits them alike. Not a test: nothing here fails a build.
 *
 *   npm run bench:startup                 # = npx tsx bench/startup.ts (builds dist/ with tsup first)
 *   BENCH_REPS=15 npm run bench:startup   # more repetitions (default 7)
 *   BENCH_BUILD=0 npm run bench:startup   # time the dist/ already there
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { recordResourceCreated } from "../src/ledger/index.js";
import type { RunRecord } from "../src/run/journal.js";
import type { RunEvent } from "../src/run/events.js";
import { buildDist } from "./build-dist.js";

const REPO = resolve(fileURLToPath(import.meta.url), "..", "..");
const INDEX = join(REPO, "dist", "index.js");
const CLI = join(REPO, "dist", "cli.js");
const REPS = Math.max(1, Number(process.env["BENCH_REPS"] ?? 7) || 7);
const RUNS = 5;
const LOG_LINES_PER_RUN = 200;

interface Case {
  /** The row's name (also the BENCH_ROW row); null for the floor. */
  readonly row: string | null;
  readonly label: string;
  readonly args: readonly string[];
  /** The goal over the floor, ms; null for the floor. */
  readonly goalMs: number | null;
  /** Throws when the process did not do its job (a broken build must not look fast). */
  readonly check: (stdout: string) => void;
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

/** A RUNCTL_HOME with `RUNS` finished runs (log lines, metrics, cost, exit) and ledger lines, in the SDK's formats. */
function makeHome(): string {
  const home = mkdtempSync(join(tmpdir(), "runctl-bench-startup-"));
  const started = Date.parse("2026-12-01T10:00:00.000Z");
  for (let i = 0; i < RUNS; i++) {
    const createdAt = new Date(started + i * 3_600_000).toISOString();
    const runId = `20261201-1${i}0000-bench${i}`;
    const dir = join(home, "runs", runId);
    mkdirSync(dir, { recursive: true });
    const record: RunRecord = { version: 1, runId, createdAt, provider: "local", script: "train.py", machine: { provider: "local", id: `local-${i}` } };
    writeFileSync(join(dir, "run.json"), `${JSON.stringify(record, null, 2)}\n`);
    const base = { runId, time: createdAt };
    const events: RunEvent[] = [];
    let offset = 0;
    for (let s = 1; s <= LOG_LINES_PER_RUN; s++) {
      const line = `step ${s} loss ${(1 / s).toFixed(4)}`;
      offset += line.length + 1;
      events.push({ ...base, seq: events.length + 1, type: "log", line, offset });
    }
    events.push({ ...base, seq: events.length + 1, type: "cost", usd: 0.01 * (i + 1), hourlyUsd: 0.06 });
    events.push({ ...base, seq: events.length + 1, type: "exit", status: "succeeded", exitCode: 0, signal: null, durationMs: 600_000, restarts: 0 });
    writeFileSync(join(dir, "journal.jsonl"), events.map((e) => `${JSON.stringify({ e })}\n`).join(""));
  }
  const previous = process.env["RUNCTL_HOME"];
  process.env["RUNCTL_HOME"] = home;
  try {
    for (let i = 0; i < 3; i++) {
      recordResourceCreated({ kind: "instance", id: `i-0bench${i}`, provider: "ec2", region: "us-east-1", runId: `20261201-1${i}0000-bench${i}`, createdAt: new Date(started).toISOString(), tags: {} });
    }
  } finally {
    if (previous === undefined) delete process.env["RUNCTL_HOME"];
    else process.env["RUNCTL_HOME"] = previous;
  }
  return home;
}

/** Wall time of one process, spawn to exit, ms; throws when it fails or its output is wrong. */
function timeOnce(c: Case, env: NodeJS.ProcessEnv): number {
  const started = process.hrtime.bigint();
  const result = spawnSync(process.execPath, c.args, { cwd: REPO, env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  if (result.status !== 0) throw new Error(`${c.label} exited ${result.status ?? result.signal}: ${result.stderr}`);
  c.check(result.stdout);
  return ms;
}

function main(): void {
  buildDist(REPO);
  const version = (JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { version: string }).version;
  const home = makeHome();
  const env = { ...process.env, RUNCTL_HOME: home, NODE_OPTIONS: "" };
  const cases: Case[] = [
    { row: null, label: "node -e 0", args: ["-e", "0"], goalMs: null, check: () => {} },
    {
      row: 'import("runctl") over node -e 0',
      label: 'import("runctl")',
      args: ["--input-type=module", "-e", `const m = await import(${JSON.stringify(INDEX)}); if (typeof m.Runctl !== "function") process.exit(1);`],
      goalMs: 150,
      check: () => {},
    },
    {
      row: "runctl --version over node -e 0",
      label: "runctl --version",
      args: [CLI, "--version"],
      goalMs: 300,
      check: (out) => {
        if (out.trim() !== version) throw new Error(`runctl --version printed ${JSON.stringify(out)}`);
      },
    },
    {
      row: "runctl ls over node -e 0",
      label: `runctl ls (${RUNS} runs)`,
      args: [CLI, "ls"],
      goalMs: 300,
      check: (out) => {
        for (let i = 0; i < RUNS; i++) if (!out.includes(`bench${i}`)) throw new Error(`runctl ls did not list run ${i}:\n${out}`);
        if (!out.includes("i-0bench0")) throw new Error(`runctl ls did not list the ledger's resources:\n${out}`);
      },
    },
  ];
  try {
    console.log(`${cpus().length} CPUs, Node ${process.version}, load ${loadavg()[0]!.toFixed(2)}, ${REPS} repetitions, medians\n`);
    // Untimed: page cache, and a check that every case works.
    for (const c of cases) timeOnce(c, env);
    const samples = cases.map(() => [] as number[]);
    for (let rep = 0; rep < REPS; rep++) {
      // Rotate who goes first, so no case always follows the same one.
      for (let k = 0; k < cases.length; k++) {
        const i = (k + rep) % cases.length;
        samples[i]!.push(timeOnce(cases[i]!, env));
      }
    }
    const floor = median(samples[0]!);
    const rows = cases.map((c, i) => {
      const ms = median(samples[i]!);
      const over = c.goalMs === null ? null : Math.round(ms - floor);
      return { c, ms, over, met: c.goalMs === null || over === null ? null : over < c.goalMs };
    });
    const table = [
      ["case", "median ms", "runctl ms over node -e 0", "goal", "met"],
      ...rows.map(({ c, ms, over, met }) => [c.label, String(Math.round(ms)), over === null ? "(floor)" : String(over), c.goalMs === null ? "" : `< ${c.goalMs} ms`, met === null ? "" : met ? "yes" : "NO"]),
    ];
    const widths = table[0]!.map((_, col) => Math.max(...table.map((r) => r[col]!.length)));
    for (const [n, r] of table.entries()) {
      console.log(r.map((cell, col) => (col === 0 ? cell.padEnd(widths[col]!) : cell.padStart(widths[col]!))).join("  ").trimEnd());
      if (n === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
    }
    console.log("\nsamples, ms:");
    for (const [i, c] of cases.entries()) console.log(`  ${c.label.padEnd(widths[0]!)}  ${samples[i]!.map((v) => Math.round(v)).join(" ")}`);
    console.log("");
    for (const { c, over, met } of rows) {
      if (c.row === null) continue;
      console.log(`BENCH_ROW ${JSON.stringify({ bench: "startup", row: c.row, value: over, unit: "ms", peer: null, ratio: null, goal: `< ${c.goalMs} ms`, met })}`);
    }
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

main();
