/**
 * Benchmark: runctl's code sync vs `rsync -a --delete` over ssh, to the same SSH test host.
 *
 *   npm run bench:sync                      # = npx tsx bench/sync-vs-rsync.ts
 *   BENCH_REPS=9 npm run bench:sync
 *
 * Starts its own SSH testbed (one host in a network namespace; needs root, like `npm test`), makes a
 * 2,000-file / 50 MB tree in a temporary folder and times, for runctl and for rsync (separate target
 * folders on the same host), the median of several repetitions of:
 *   - first sync     into an empty target (for runctl also with no local hash cache: a tree it has never seen)
 *   - 1-file change  one file's content rewritten, then a sync
 *   - no-op          a sync with nothing changed
 * and prints both times, the ratio runctl/rsync and whether the goal of issue 15 is met (first sync
 * <= 0.8x, 1-file change <= 0.7x, no-op < 150 ms), then one `BENCH_ROW` line per row
 * (bench/bench-row.ts). Not a test: nothing here fails a build.
 *
 * "runctl" is `ProvisionedMachine.sync()` on a connected machine (the connection and the agent check
 * are made once, as in a session; the warm-up call pays for them and is not timed). The two
 * "new connection" rows add a fresh SSH connection (and agent check) per sync, as every rsync call
 * makes its own ssh connection; they are printed for reference.
 *
 * Safety: it connects only to the address of the host it has just created, after checking that the
 * address routes through the testbed's own bridge (see test/testbed/net-guard.ts).
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, posix } from "node:path";
import { Runctl, sshHosts, type ProvisionedMachine, type SshHost } from "runctl";
import { defaultStateDir } from "../test/testbed/global-setup.js";
import { plainSshOptions } from "./bench-host.js";
import { printBenchRow, runBench, type BenchRow } from "./bench-row.js";
import { startTestbed, type Testbed, type TestHost } from "../test/testbed/testbed.js";

const REPS = Math.max(1, Math.floor(Number(process.env["BENCH_REPS"] ?? "5")) || 5);
const FILES = 2_000;
const BIG_FILES = 50;
const TOTAL_BYTES = 50 * 1024 * 1024;
const NOOP_LIMIT_MS = 150;
/** Goals of issue 15: runctl/rsync at most this much (first sync, 1-file change); no-op absolute. */
const FIRST_GOAL_RATIO = 0.8;
const CHANGE_GOAL_RATIO = 0.7;

interface Tree {
  readonly dir: string;
  readonly files: readonly string[];
  readonly bytes: number;
}

/**
 * 2,000 files, 50 MB, incompressible: 1,950 source-like files of 1–20 KB in 40 folders plus 50 larger
 * ones (weights, data shards) that make up the rest.
 */
function makeTree(): Tree {
  const dir = mkdtempSync(join(tmpdir(), "runctl-bench-tree-"));
  const small = FILES - BIG_FILES;
  const sizes: number[] = [];
  for (let i = 0; i < small; i++) sizes.push(1024 + Math.floor(Math.random() * 19 * 1024));
  const smallBytes = sizes.reduce((a, b) => a + b, 0);
  const bigEach = Math.floor((TOTAL_BYTES - smallBytes) / BIG_FILES);
  for (let i = 0; i < BIG_FILES; i++) sizes.push(bigEach);
  const files: string[] = [];
  let bytes = 0;
  sizes.forEach((size, i) => {
    const rel = i < small ? `pkg${i % 40}/mod_${i}.py` : `assets/shard_${i - small}.bin`;
    mkdirSync(join(dir, rel, ".."), { recursive: true });
    writeFileSync(join(dir, rel), randomBytes(size));
    files.push(rel);
    bytes += size;
  });
  return { dir, files, bytes };
}

function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

function run(cmd: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, [...args], { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}: ${err.trim()}`))));
  });
}

/** The ssh command rsync uses (paths of the testbed's own files, no spaces). */
function sshCommand(h: TestHost): string {
  return ["ssh", ...plainSshOptions(h)].join(" ");
}

function rsyncTo(h: TestHost, tree: Tree, remoteDir: string): Promise<void> {
  return run("rsync", ["-a", "--delete", "-e", sshCommand(h), `${tree.dir}/`, `${h.user}@${h.address}:${remoteDir}/`]);
}

/** Rewrites one small file with new content (the common "edited one file" case). */
function changeOneFile(tree: Tree, n: number): void {
  const rel = tree.files[(n * 97) % (FILES - BIG_FILES)]!;
  writeFileSync(join(tree.dir, rel), randomBytes(1024 + ((n * 131) % (19 * 1024))));
}

interface Row {
  readonly name: string;
  readonly runctl: number[];
  readonly rsync: number[];
  /** runctl/rsync at most this; absent: the no-op row, whose goal is absolute (< NOOP_LIMIT_MS). */
  readonly goalRatio?: number;
}

function printTable(rows: readonly Row[], reference: readonly { name: string; runctl: number[]; against: Row }[]): void {
  const header = ["case", "runctl ms", "rsync ms", "runctl/rsync", "goal", "met"];
  const lines: string[][] = [];
  const benchRows: BenchRow[] = [];
  for (const r of rows) {
    const a = median(r.runctl);
    const b = median(r.rsync);
    const ratio = a / b;
    const goal = r.goalRatio !== undefined ? `<= ${r.goalRatio}x` : `< ${NOOP_LIMIT_MS} ms`;
    const met = r.goalRatio !== undefined ? ratio <= r.goalRatio : a < NOOP_LIMIT_MS;
    lines.push([r.name, a.toFixed(0), b.toFixed(0), `${ratio.toFixed(2)}x`, goal, met ? "yes" : "NO"]);
    benchRows.push({ bench: "sync", row: r.name, value: a, unit: "ms", peer: b, ratio, goal, met });
  }
  for (const e of reference) {
    const a = median(e.runctl);
    const b = median(e.against.rsync);
    lines.push([e.name, a.toFixed(0), b.toFixed(0), `${(a / b).toFixed(2)}x`, "(reference)", ""]);
    benchRows.push({ bench: "sync", row: e.name, value: a, unit: "ms", peer: b, ratio: a / b, goal: "", met: null });
  }
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cells: readonly string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  console.log(fmt(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const l of lines) console.log(fmt(l));
  console.log("");
  for (const r of benchRows) printBenchRow(r);
}

async function withNewConnection<T>(host: SshHost, fn: (m: ProvisionedMachine) => Promise<T>): Promise<T> {
  const m = await Runctl.instance(sshHosts(host)).provision();
  try {
    return await fn(m);
  } finally {
    await m.release();
  }
}

async function main(): Promise<void> {
  const stateDir = defaultStateDir();
  const runctlHome = mkdtempSync(join(tmpdir(), "runctl-bench-home-"));
  process.env["RUNCTL_HOME"] = runctlHome;
  let bed: Testbed | undefined;
  let tree: Tree | undefined;
  const cleanup = async (): Promise<void> => {
    await bed?.stop().catch(() => {});
    if (tree) rmSync(tree.dir, { recursive: true, force: true });
    rmSync(runctlHome, { recursive: true, force: true });
  };
  process.once("SIGINT", () => void cleanup().finally(() => process.exit(130)));
  try {
    bed = await startTestbed({ hosts: 1, stateDir });
    const h = bed.hosts[0]!;
    await bed.assertSafe(h.address);
    tree = makeTree();
    const t = tree;
    console.log(`sync benchmark: ${t.files.length} files, ${(t.bytes / 1024 / 1024).toFixed(1)} MiB -> ${h.user}@${h.address} (testbed host over a veth pair, no shaping)`);
    console.log(`${cpus().length} CPUs, Node ${process.version}, ${REPS} repetitions per case, medians\n`);

    const host: SshHost = { host: h.address, username: h.user, privateKeyPath: h.privateKeyPath, knownHostsPath: h.knownHostsPath };
    const machine: ProvisionedMachine = await Runctl.instance(sshHosts(host)).provision();
    const benchDir = posix.join(h.home, "bench");
    const removeBenchDir = async (): Promise<void> => {
      const r = await machine.exec({ script: `rm -rf -- '${benchDir}' && mkdir -p '${benchDir}' && sync` });
      if (r.exitCode !== 0) throw new Error(`cleaning ${benchDir} failed: ${r.stderrTail}`);
    };
    try {
      await removeBenchDir();
      // Warm-up, not timed: connection, agent upload, interpreter, page cache; one rsync to warm ssh.
      await machine.sync(t.dir, posix.join(benchDir, "warmup-runctl"));
      await rsyncTo(h, t, posix.join(benchDir, "warmup-rsync"));

      const first: Row = { name: "first sync", runctl: [], rsync: [], goalRatio: FIRST_GOAL_RATIO };
      const change: Row = { name: "1-file change", runctl: [], rsync: [], goalRatio: CHANGE_GOAL_RATIO };
      const noop: Row = { name: "no-op", runctl: [], rsync: [] };
      const changeNewConnection: number[] = [];
      const noopNewConnection: number[] = [];
      for (let rep = 0; rep < REPS; rep++) {
        // New target folders every repetition: nothing is deleted while timings run (on some disks
        // the deferred work of deleting 2,000 files slows the writes that follow).
        const runctlDir = posix.join(benchDir, `runctl-${rep}`);
        const rsyncDir = posix.join(benchDir, `rsync-${rep}`);
        const syncRunctl = (): Promise<unknown> => machine.sync(t.dir, runctlDir);
        const syncRsync = (): Promise<unknown> => rsyncTo(h, t, rsyncDir);
        // Alternate who goes first, so neither always runs right after the other's disk writes.
        const both = async (row: Row): Promise<void> => {
          if (rep % 2 === 0) {
            row.runctl.push(await timed(syncRunctl));
            row.rsync.push(await timed(syncRsync));
          } else {
            row.rsync.push(await timed(syncRsync));
            row.runctl.push(await timed(syncRunctl));
          }
        };
        // A tree runctl has never seen: no local hash cache (the target is new, so none there either).
        rmSync(join(runctlHome, "cache"), { recursive: true, force: true });
        await both(first);
        changeOneFile(t, 2 * rep);
        await both(change);
        await both(noop);
        // The same with a new SSH connection per call, for reference.
        changeOneFile(t, 2 * rep + 1);
        changeNewConnection.push(await timed(() => withNewConnection(host, (m) => m.sync(t.dir, runctlDir))));
        await syncRsync();
        noopNewConnection.push(await timed(() => withNewConnection(host, (m) => m.sync(t.dir, runctlDir))));
        console.log(`  repetition ${rep + 1}/${REPS} done`);
      }
      console.log("");
      printTable(
        [first, change, noop],
        [
          { name: "1-file change, new connection", runctl: changeNewConnection, against: change },
          { name: "no-op, new connection", runctl: noopNewConnection, against: noop },
        ],
      );
      const samples = (xs: readonly number[]): number[] => xs.map((x) => Math.round(x));
      console.log("\nsamples (ms):");
      for (const r of [first, change, noop]) console.log(`  ${r.name.padEnd(14)} runctl ${JSON.stringify(samples(r.runctl))}  rsync ${JSON.stringify(samples(r.rsync))}`);
      console.log(`  ${"new connection".padEnd(14)} 1-file ${JSON.stringify(samples(changeNewConnection))}  no-op ${JSON.stringify(samples(noopNewConnection))}`);
    } finally {
      await removeBenchDir().catch(() => {});
      await machine.release();
    }
  } finally {
    await cleanup();
  }
}

runBench(main);
