/**
 * Benchmark: runctl's code sync vs `rsync -a --delete` over ssh, to the same SSH test host.
 *
 *   npx tsx bench/sync-vs-rsync.ts            # or: npm run bench:sync
 *   BENCH_REPS=7 npx tsx bench/sync-vs-rsync.ts
 *
 * Starts its own SSH testbed (one host in a network namespace; needs root, like `npm test`), makes a
 * 2,000-file / 50 MB tree in a temporary folder and times, for runctl and for rsync (separate target
 * folders on the same host), the median of several repetitions of:
 *   - first sync   an empty target (and, for runctl, no hash caches on either side)
 *   - 1-file change one file's content rewritten, then a sync
 *   - no-op        a sync with nothing changed
 * and prints both times, the ratio runctl/rsync and whether the goal of DESIGN.md §8 is met
 * (<= 1.0x for every case; no-op also < 300 ms). Not a test: nothing here fails a build.
 *
 * "runctl" is `ProvisionedMachine.sync()` on a connected machine (the connection and the agent check
 * are made once, as in a session; the first call pays for them and is not timed). The
 * "runctl, new connection" row adds a fresh SSH connection per sync, as each rsync call makes.
 *
 * Safety: it connects only to the address of the host it has just created, after checking that the
 * address routes through the testbed's own bridge (see test/testbed/net-guard.ts).
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, posix } from "node:path";
import { fileURLToPath } from "node:url";
import { Runctl, sshHosts, type ProvisionedMachine, type SshHost } from "runctl";
import { startTestbed, type Testbed, type TestHost } from "../test/testbed/testbed.js";

const REPS = Math.max(1, Number(process.env["BENCH_REPS"] ?? "5"));
const FILES = 2_000;
const TOTAL_BYTES = 50 * 1024 * 1024;
const NOOP_LIMIT_MS = 300;

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
  const small = FILES - 50;
  const sizes: number[] = [];
  for (let i = 0; i < small; i++) sizes.push(1024 + Math.floor(Math.random() * 19 * 1024));
  const smallBytes = sizes.reduce((a, b) => a + b, 0);
  const bigEach = Math.floor((TOTAL_BYTES - smallBytes) / 50);
  for (let i = 0; i < 50; i++) sizes.push(bigEach);
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

/** The ssh command rsync uses: the host's key, its known_hosts, strict checking, no user config. */
function sshArgs(h: TestHost): string[] {
  return ["-F", "/dev/null", "-i", h.privateKeyPath, "-o", "IdentitiesOnly=yes", "-o", `UserKnownHostsFile=${h.knownHostsPath}`, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"];
}

function rsyncTo(h: TestHost, tree: Tree, remoteDir: string): Promise<void> {
  return run("rsync", ["-a", "--delete", "-e", ["ssh", ...sshArgs(h)].join(" "), `${tree.dir}/`, `${h.user}@${h.address}:${remoteDir}/`]);
}

/** Rewrites one file with new content of the same size (the common "edited one file" case). */
function touchOne(tree: Tree, rep: number): void {
  const rel = tree.files[(rep * 97) % (FILES - 50)]!;
  const size = 1024 + ((rep * 131) % (19 * 1024));
  writeFileSync(join(tree.dir, rel), randomBytes(size));
}

interface Row {
  readonly name: string;
  readonly runctl: number[];
  readonly rsync: number[];
  readonly noop?: boolean;
}

function printTable(rows: readonly Row[], extra: readonly { name: string; runctl: number[]; against: Row }[]): void {
  const header = ["case", "runctl ms", "rsync ms", "runctl/rsync", "goal", "met"];
  const lines: string[][] = [];
  for (const r of rows) {
    const a = median(r.runctl);
    const b = median(r.rsync);
    const ratio = a / b;
    const goal = r.noop ? `<= 1.0x, < ${NOOP_LIMIT_MS} ms` : "<= 1.0x";
    const met = ratio <= 1.0 && (!r.noop || a < NOOP_LIMIT_MS);
    lines.push([r.name, a.toFixed(0), b.toFixed(0), `${ratio.toFixed(2)}x`, goal, met ? "yes" : "NO"]);
  }
  for (const e of extra) {
    const a = median(e.runctl);
    const b = median(e.against.rsync);
    lines.push([e.name, a.toFixed(0), b.toFixed(0), `${(a / b).toFixed(2)}x`, "(for reference)", ""]);
  }
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cells: readonly string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  console.log(fmt(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const l of lines) console.log(fmt(l));
}

async function main(): Promise<void> {
  const stateDir = fileURLToPath(new URL("../.runctl-testbed", import.meta.url));
  const runctlHome = mkdtempSync(join(tmpdir(), "runctl-bench-home-"));
  process.env["RUNCTL_HOME"] = runctlHome;
  let bed: Testbed | undefined;
  let tree: Tree | undefined;
  const stop = async (): Promise<void> => {
    await bed?.stop().catch(() => {});
    if (tree) rmSync(tree.dir, { recursive: true, force: true });
    rmSync(runctlHome, { recursive: true, force: true });
  };
  process.once("SIGINT", () => void stop().finally(() => process.exit(130)));
  try {
    bed = await startTestbed({ hosts: 1, stateDir });
    const h = bed.hosts[0]!;
    await bed.assertSafe(h.address);
    tree = makeTree();
    console.log(`sync benchmark: ${tree.files.length} files, ${(tree.bytes / 1024 / 1024).toFixed(1)} MiB -> ${h.user}@${h.address} (testbed host, veth, no shaping)`);
    console.log(`${cpus().length} CPUs, Node ${process.version}, ${REPS} repetitions per case, median\n`);

    const host: SshHost = { host: h.address, username: h.user, privateKeyPath: h.privateKeyPath, knownHostsPath: h.knownHostsPath };
    const machine: ProvisionedMachine = await Runctl.instance(sshHosts(host)).provision();
    const runctlDir = posix.join(h.home, "bench", "runctl");
    const rsyncDir = posix.join(h.home, "bench", "rsync");
    const wipe = async (): Promise<void> => {
      // Both targets (and the agent's hash cache beside the runctl one) are removed: a true first sync.
      const bench = posix.join(h.home, "bench");
      const r = await machine.exec({ script: `rm -rf -- '${bench}' && mkdir -p '${bench}'` });
      if (r.exitCode !== 0) throw new Error(`wipe failed: ${r.stderrTail}`);
    };
    try {
      await wipe();
      // Warm-up (not timed): connection, agent upload, interpreter; one rsync to warm ssh and the page cache.
      await machine.sync(tree.dir, posix.join(h.home, "bench", "warmup"));
      await rsyncTo(h, tree, posix.join(h.home, "bench", "warmup-rsync"));

      const first: Row = { name: "first sync", runctl: [], rsync: [] };
      const change: Row = { name: "1-file change", runctl: [], rsync: [] };
      const noop: Row = { name: "no-op", runctl: [], rsync: [], noop: true };
      const coldNoop: number[] = [];
      const coldChange: number[] = [];
      const t = tree;
      for (let rep = 0; rep < REPS; rep++) {
        await wipe();
        // Alternate who goes first, so neither always runs right after the other's disk writes.
        const order = rep % 2 === 0 ? ["runctl", "rsync"] : ["rsync", "runctl"];
        for (const who of order) {
          if (who === "runctl") first.runctl.push(await timed(() => machine.sync(t.dir, runctlDir)));
          else first.rsync.push(await timed(() => rsyncTo(h, t, rsyncDir)));
        }
        touchOne(t, rep);
        for (const who of order) {
          if (who === "runctl") change.runctl.push(await timed(() => machine.sync(t.dir, runctlDir)));
          else change.rsync.push(await timed(() => rsyncTo(h, t, rsyncDir)));
        }
        for (const who of order) {
          if (who === "runctl") noop.runctl.push(await timed(() => machine.sync(t.dir, runctlDir)));
          else noop.rsync.push(await timed(() => rsyncTo(h, t, rsyncDir)));
        }
        // The same with a new SSH connection per call (what each rsync invocation pays for).
        touchOne(t, rep + 1000);
        coldChange.push(await timed(() => withNewConnection(host, (m) => m.sync(t.dir, runctlDir))));
        await rsyncTo(h, t, rsyncDir);
        coldNoop.push(await timed(() => withNewConnection(host, (m) => m.sync(t.dir, runctlDir))));
        process.stdout.write(`  rep ${rep + 1}/${REPS} done\n`);
      }
      console.log("");
      printTable(
        [first, change, noop],
        [
          { name: "1-file change, new connection", runctl: coldChange, against: change },
          { name: "no-op, new connection", runctl: coldNoop, against: noop },
        ],
      );
      console.log(`\nall samples (ms): ${JSON.stringify(
        Object.fromEntries(
          [first, change, noop].map((r) => [r.name, { runctl: r.runctl.map(Math.round), rsync: r.rsync.map(Math.round) }]).concat([
            ["1-file change, new connection", { runctl: coldChange.map(Math.round), rsync: [] }],
            ["no-op, new connection", { runctl: coldNoop.map(Math.round), rsync: [] }],
          ]),
        ),
      )}`);
    } finally {
      await machine.release();
    }
  } finally {
    await stop();
  }
}

async function withNewConnection<T>(host: SshHost, fn: (m: ProvisionedMachine) => Promise<T>): Promise<T> {
  const m = await Runctl.instance(sshHosts(host)).provision();
  try {
    return await fn(m);
  } finally {
    await m.release();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
