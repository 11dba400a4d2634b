/**
 * Benchmark: runctl's S3 storage (`s3()`: its own pooled-buffer multipart upload; `download()` to a
 * file, parallel ranged GETs written at their offsets) vs `aws s3 cp`, uploading and downloading
 * the same 1 GiB file to and from the same S3-protocol server (s3rver on 127.0.0.1, started here),
 * in the same run. `get()` piped to a file (ranges emitted in order) is timed too, for reference.
 *
 *   npm run bench:s3                        # = npx tsx bench/s3-vs-aws-cli.ts (builds dist/ with tsup first)
 *   BENCH_REPS=5 BENCH_SIZE_MB=2048 npm run bench:s3
 *   BENCH_BUILD=0 npm run bench:s3          # time the dist/ already there
 *
 * Prints, per direction, the median MB/s of each tool, the ratio runctl/aws (goal >= 1.2x upload,
 * >= 1.5x download) and the runctl client's peak RSS (goal < 256 MB), then one `BENCH_ROW` line per
 * figure (bench/bench-row.ts). The runctl side runs in a child process per transfer, plain `node`
 * on the built package's `runctl/s3` entry (bench/s3-child.mjs), as a user's program would. Both
 * tools are timed the same way: the wall time of the whole process, start-up
 * included (the conservative comparison; runctl's in-process time, from the first byte read to the
 * last byte written, is printed too). runctl's peak RSS is its process's own high-water mark (VmHWM
 * from /proc/self/status). The warm-up downloads are checked against the source's sha256, untimed.
 * Not a test: nothing here fails a build.
 *
 * The aws CLI gets dummy credentials in its environment and an AWS_CONFIG_FILE with path-style
 * addressing and `when_required` checksums, which s3rver needs (as runctl's `checksums` option does).
 */
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { s3 } from "../src/storage/s3/index.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../test/support/s3-server.js";
import { printBenchRow } from "./bench-row.js";
import { buildDist } from "./build-dist.js";

const BUCKET = "runctl-bench";
const MB = 1000 * 1000;
const MiB = 1024 * 1024;
const REPO = resolve(fileURLToPath(import.meta.url), "..", "..");
/** The runctl side of each transfer: plain `node` on the built `runctl/s3` entry. */
const CHILD = join(REPO, "bench", "s3-child.mjs");
/** Goals of issue 15: runctl/aws throughput at least this much per direction, peak RSS below RSS_GOAL_MB. */
const GOAL_RATIO = { upload: 1.2, download: 1.5 } as const;
const RSS_GOAL_MB = 256;

interface ChildResult {
  /** Transfer time inside the child. */
  readonly ms: number;
  /** Wall time of the child process, start-up included (filled in by the parent). */
  readonly wallMs?: number;
  /** CPU time (user + system) of the transfer inside the child. */
  readonly cpuMs: number;
  /** Peak resident set size of the child, bytes. */
  readonly peakRssBytes: number;
}

function run(command: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<{ stdout: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const p = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    p.on("error", reject);
    p.on("close", (code) => {
      const ms = performance.now() - started;
      if (code === 0) resolve({ stdout, ms });
      else reject(new Error(`${command} ${args.join(" ")} exited ${code}: ${stderr.slice(-2000)}`));
    });
  });
}

async function runctlTransfer(direction: "upload" | "download" | "get", server: TestS3Server, key: string, file: string): Promise<ChildResult> {
  const partSize = process.env["BENCH_PART_SIZE"];
  const queueSize = process.env["BENCH_QUEUE_SIZE"];
  const options = {
    endpoint: server.endpoint,
    ...S3RVER_CLIENT_SETTINGS,
    credentials: TEST_AWS_CREDENTIALS,
    ...(partSize ? { partSizeBytes: Number(partSize) } : {}),
    ...(queueSize ? { queueSize: Number(queueSize) } : {}),
  };
  const { stdout, ms } = await run(process.execPath, [CHILD, direction, BUCKET, key, file], {
    ...process.env,
    NODE_OPTIONS: "",
    NODE_NO_WARNINGS: "1",
    RUNCTL_BENCH_S3_OPTIONS: JSON.stringify(options),
  });
  const line = stdout.trim().split("\n").pop() ?? "";
  return { ...(JSON.parse(line) as ChildResult), wallMs: ms };
}

/** CPU time (user + system) the process `pid` has used so far, ms; from /proc/PID/stat (clock ticks of 10 ms). */
function processCpuMs(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** Runs `transfer` and records the CPU time the S3 server used meanwhile into `into`. */
async function withServerCpu<T>(server: TestS3Server, into: number[], transfer: () => Promise<T>): Promise<T> {
  const before = processCpuMs(server.pid);
  const result = await transfer();
  into.push(processCpuMs(server.pid) - before);
  return result;
}

/**
 * Runs the upload `transfer` and records into `into` how long it went on after s3rver created the
 * object's file, i.e. how long CompleteMultipartUpload took: s3rver then reads every part back,
 * hashes it again and writes it into the object, one stream, while the client only waits. (s3rver
 * keeps `KEY` as `<dir>/<bucket>/KEY._S3rver_object`; polled every 10 ms from this process.)
 */
async function withCompleteTime<T>(server: TestS3Server, key: string, into: number[], transfer: () => Promise<T>): Promise<T> {
  const objectFile = join(server.dir, BUCKET, `${key}._S3rver_object`);
  let seenAt: number | undefined;
  const poll = setInterval(() => {
    if (seenAt === undefined && existsSync(objectFile)) seenAt = performance.now();
  }, 10);
  try {
    const result = await transfer();
    into.push(seenAt === undefined ? Number.NaN : performance.now() - seenAt);
    return result;
  } finally {
    clearInterval(poll);
  }
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** The AWS SDK's Node-version notice, once per process: not a benchmark result. */
function quietSdkNotices(): void {
  const listeners = process.listeners("warning");
  process.removeAllListeners("warning");
  process.on("warning", (warning) => {
    if (warning.name === "NodeVersionSupportWarning" || /AWS SDK for JavaScript/.test(warning.message)) return;
    for (const l of listeners) l(warning);
  });
}

async function main(): Promise<void> {
  quietSdkNotices();
  buildDist(REPO);
  const reps = Math.max(1, Math.floor(Number(process.env["BENCH_REPS"] ?? "3")) || 3);
  const sizeBytes = Math.max(1, Number(process.env["BENCH_SIZE_MB"] ?? "1024")) * MiB;
  const work = mkdtempSync(join(tmpdir(), "runctl-bench-s3-"));
  let server: TestS3Server | undefined;
  const cleanup = async (): Promise<void> => {
    await server?.stop();
    rmSync(work, { recursive: true, force: true });
  };
  process.once("SIGINT", () => void cleanup().finally(() => process.exit(130)));
  try {
    const live = (server = await startS3Server({ buckets: [BUCKET] }));
    const awsVersion = (await run("aws", ["--version"], process.env)).stdout.trim() || "aws CLI";
    const source = join(work, "source.bin");
    {
      const out = createWriteStream(source);
      for (let written = 0; written < sizeBytes; written += 8 * MiB) {
        if (!out.write(randomBytes(Math.min(8 * MiB, sizeBytes - written)))) await new Promise<void>((r) => out.once("drain", () => r()));
      }
      await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    }
    const sourceSha = await sha256File(source);

    const config = join(work, "aws-config");
    writeFileSync(
      config,
      ["[default]", "region = us-east-1", "request_checksum_calculation = when_required", "response_checksum_validation = when_required", "s3 =", "  addressing_style = path", ""].join("\n"),
    );
    const awsEnv: NodeJS.ProcessEnv = {
      PATH: process.env["PATH"],
      HOME: work,
      AWS_CONFIG_FILE: config,
      AWS_SHARED_CREDENTIALS_FILE: join(work, "no-credentials"),
      AWS_ACCESS_KEY_ID: TEST_AWS_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: TEST_AWS_CREDENTIALS.secretAccessKey,
      AWS_EC2_METADATA_DISABLED: "true",
      AWS_PAGER: "",
    };
    const aws = (args: readonly string[]) => run("aws", ["--endpoint-url", live.endpoint, ...args, "--only-show-errors"], awsEnv);
    const awsStartup: number[] = [];
    for (let i = 0; i < 3; i++) awsStartup.push((await run("aws", ["--version"], awsEnv)).ms);

    console.log(`S3 benchmark: ${(sizeBytes / MiB).toFixed(0)} MiB file, s3rver 3.7.1 on 127.0.0.1 (same server for both tools)`);
    console.log(`${cpus().length} CPUs, Node ${process.version}, ${awsVersion}, ${reps} repetitions, medians\n`);

    const samples = {
      runctlUp: [] as number[], runctlDown: [] as number[], runctlUpInProcess: [] as number[], runctlDownInProcess: [] as number[],
      awsUp: [] as number[], awsDown: [] as number[], rssUp: [] as number[], rssDown: [] as number[],
      runctlGet: [] as number[], rssGet: [] as number[],
    };
    // What the server spent meanwhile: a server busy for the whole transfer is what bounds it.
    const serverCpu = { runctlUp: [] as number[], runctlDown: [] as number[], awsUp: [] as number[], awsDown: [] as number[] };
    const clientCpu = { up: [] as number[], down: [] as number[] };
    // How long each upload waited on the server's CompleteMultipartUpload: the same work for both tools.
    const completeMs = { runctl: [] as number[], aws: [] as number[] };
    // Untimed warm-up of both tools (page cache, server folders, module caches), checked for integrity.
    {
      await runctlTransfer("upload", server, "warm/runctl.bin", source);
      await runctlTransfer("download", server, "warm/runctl.bin", join(work, "warm-runctl.bin"));
      await runctlTransfer("get", server, "warm/runctl.bin", join(work, "warm-runctl-get.bin"));
      await aws(["s3", "cp", source, `s3://${BUCKET}/warm/aws.bin`]);
      await aws(["s3", "cp", `s3://${BUCKET}/warm/aws.bin`, join(work, "warm-aws.bin")]);
      for (const f of ["warm-runctl.bin", "warm-runctl-get.bin", "warm-aws.bin"]) {
        const sha = await sha256File(join(work, f));
        if (sha !== sourceSha) throw new Error(`${f}: sha256 ${sha} differs from the source's ${sourceSha}`);
        rmSync(join(work, f));
      }
      console.log("  warm-up done; every download matches the source's sha256");
    }
    for (let rep = 0; rep < reps; rep++) {
      const order = rep % 2 === 0 ? (["runctl", "aws"] as const) : (["aws", "runctl"] as const);
      for (const tool of order) {
        const key = `rep${rep}/${tool}.bin`;
        const dest = join(work, `down-${tool}.bin`);
        if (tool === "runctl") {
          const up = await withServerCpu(live, serverCpu.runctlUp, () => withCompleteTime(live, key, completeMs.runctl, () => runctlTransfer("upload", live, key, source)));
          const down = await withServerCpu(live, serverCpu.runctlDown, () => runctlTransfer("download", live, key, dest));
          samples.runctlUp.push(up.wallMs!);
          samples.runctlDown.push(down.wallMs!);
          samples.runctlUpInProcess.push(up.ms);
          samples.runctlDownInProcess.push(down.ms);
          samples.rssUp.push(up.peakRssBytes);
          samples.rssDown.push(down.peakRssBytes);
          clientCpu.up.push(up.cpuMs);
          clientCpu.down.push(down.cpuMs);
          rmSync(dest, { force: true });
          const get = await runctlTransfer("get", server, key, dest);
          samples.runctlGet.push(get.wallMs!);
          samples.rssGet.push(get.peakRssBytes);
        } else {
          const up = await withServerCpu(live, serverCpu.awsUp, () => withCompleteTime(live, key, completeMs.aws, () => aws(["s3", "cp", source, `s3://${BUCKET}/${key}`])));
          samples.awsUp.push(up.ms);
          samples.awsDown.push((await withServerCpu(live, serverCpu.awsDown, () => aws(["s3", "cp", `s3://${BUCKET}/${key}`, dest]))).ms);
        }
        rmSync(dest, { force: true });
      }
      // Free the server's disk between repetitions.
      await s3(`s3://${BUCKET}`, { endpoint: server.endpoint, ...S3RVER_CLIENT_SETTINGS, credentials: TEST_AWS_CREDENTIALS }).delete([`rep${rep}/runctl.bin`, `rep${rep}/aws.bin`]);
      console.log(`  repetition ${rep + 1}/${reps} done`);
    }

    const mbps = (ms: number): number => sizeBytes / MB / (ms / 1000);
    const rows = [
      ["upload", mbps(median(samples.runctlUp)), mbps(median(samples.awsUp)), Math.max(...samples.rssUp), mbps(median(samples.runctlUpInProcess))],
      ["download", mbps(median(samples.runctlDown)), mbps(median(samples.awsDown)), Math.max(...samples.rssDown), mbps(median(samples.runctlDownInProcess))],
    ] as const;
    const header = ["direction", "runctl MB/s", "aws MB/s", "runctl/aws", "goal", "met", "runctl peak RSS", "goal", "met", "runctl in-process MB/s"];
    const lines = rows.map(([name, r, a, rss, inProcess]) => [
      name,
      r.toFixed(0),
      a.toFixed(0),
      `${(r / a).toFixed(2)}x`,
      `>= ${GOAL_RATIO[name]}x`,
      r / a >= GOAL_RATIO[name] ? "yes" : "NO",
      `${(rss / MB).toFixed(0)} MB`,
      `< ${RSS_GOAL_MB} MB`,
      rss < RSS_GOAL_MB * MB ? "yes" : "NO",
      inProcess.toFixed(0),
    ]);
    const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
    const fmt = (cells: readonly string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
    console.log("");
    console.log(fmt(header));
    console.log(widths.map((w) => "-".repeat(w)).join("  "));
    for (const l of lines) console.log(fmt(l));
    const getMbps = mbps(median(samples.runctlGet));
    console.log(`\nreference: runctl get() piped to a file (ranges emitted in order): ${getMbps.toFixed(0)} MB/s, ${(getMbps / rows[1][2]).toFixed(2)}x aws, peak RSS ${(Math.max(...samples.rssGet) / MB).toFixed(0)} MB`);
    const ms = (v: readonly number[]): string => JSON.stringify(v.map((x) => Math.round(x)));
    console.log("\nsamples (ms, whole process):");
    console.log(`  upload    runctl ${ms(samples.runctlUp)}  aws ${ms(samples.awsUp)}  (runctl in-process ${ms(samples.runctlUpInProcess)})`);
    console.log(`  download  runctl ${ms(samples.runctlDown)}  aws ${ms(samples.awsDown)}  (runctl in-process ${ms(samples.runctlDownInProcess)})`);
    console.log(`  get       runctl ${ms(samples.runctlGet)}`);
    console.log(`  runctl peak RSS (MB): upload ${JSON.stringify(samples.rssUp.map((b) => Math.round(b / MB)))}  download ${JSON.stringify(samples.rssDown.map((b) => Math.round(b / MB)))}`);
    console.log(`  aws CLI start-up (\`aws --version\`): ${Math.round(median(awsStartup))} ms`);
    const busy = (cpu: readonly number[], wall: readonly number[]): string => `${(median(cpu) / 1000).toFixed(1)} of ${(median(wall) / 1000).toFixed(1)} s`;
    console.log(
      `  s3rver CPU during each transfer (medians, CPU of wall): upload runctl ${busy(serverCpu.runctlUp, samples.runctlUp)}, aws ${busy(serverCpu.awsUp, samples.awsUp)}; ` +
        `download runctl ${busy(serverCpu.runctlDown, samples.runctlDown)}, aws ${busy(serverCpu.awsDown, samples.awsDown)}`,
    );
    const seconds = (v: readonly number[]): string => `${(median(v) / 1000).toFixed(1)} s`;
    const before = (wall: readonly number[], complete: readonly number[]): number => median(wall) - median(complete);
    console.log(
      `  upload, of which s3rver's CompleteMultipartUpload (medians; parts re-read, re-hashed, rewritten while the client waits): runctl ${seconds(completeMs.runctl)}, aws ${seconds(completeMs.aws)}; ` +
        `before it: runctl ${(before(samples.runctlUp, completeMs.runctl) / 1000).toFixed(1)} s, aws ${(before(samples.awsUp, completeMs.aws) / 1000).toFixed(1)} s ` +
        `(aws/runctl ${(before(samples.awsUp, completeMs.aws) / before(samples.runctlUp, completeMs.runctl)).toFixed(2)}x)`,
    );
    console.log(`  runctl client CPU (medians): upload ${(median(clientCpu.up) / 1000).toFixed(1)} s, download ${(median(clientCpu.down) / 1000).toFixed(1)} s`);
    console.log("");
    const size = sizeBytes === 1024 * MiB ? "1 GiB" : `${(sizeBytes / MiB).toFixed(0)} MiB`;
    for (const [name, r, a, rss] of rows) {
      printBenchRow({ bench: "s3", row: `${size} ${name}`, value: r, unit: "MB/s", peer: a, ratio: r / a, goal: `>= ${GOAL_RATIO[name]}x`, met: r / a >= GOAL_RATIO[name] });
      printBenchRow({ bench: "s3", row: `${size} ${name} peak RSS`, value: rss / MB, unit: "MB", peer: null, ratio: null, goal: `< ${RSS_GOAL_MB} MB`, met: rss < RSS_GOAL_MB * MB });
    }
    printBenchRow({ bench: "s3", row: `${size} get() to a file`, value: getMbps, unit: "MB/s", peer: rows[1][2], ratio: getMbps / rows[1][2], goal: "", met: null });
  } finally {
    await cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
