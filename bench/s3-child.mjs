// One runctl transfer for bench/s3-vs-aws-cli.ts, run by plain `node` against the built package's
// `runctl/s3` entry (dist/s3.js), as a user's program would: no tsx, no TypeScript. The storage's
// options come as JSON in RUNCTL_BENCH_S3_OPTIONS (set by the bench: endpoint, dummy credentials,
// the s3rver settings). Prints the transfer's time, its CPU time and the process's peak RSS as JSON on stdout.
//
//   node bench/s3-child.mjs upload|download|get BUCKET KEY FILE
import { createReadStream, createWriteStream, readFileSync } from "node:fs";
import { pipeline } from "node:stream/promises";
import { s3 } from "../dist/s3.js";

const MiB = 1024 * 1024;
const [direction, bucket, key, file] = process.argv.slice(2);
const store = s3(`s3://${bucket}`, JSON.parse(process.env.RUNCTL_BENCH_S3_OPTIONS ?? "{}"));
const started = performance.now();
const cpuBefore = process.cpuUsage();
if (direction === "upload") await store.put(key, createReadStream(file, { highWaterMark: MiB }));
else if (direction === "download") await store.download(key, file);
else if (direction === "get") await pipeline(await store.get(key), createWriteStream(file, { highWaterMark: MiB }));
else throw new Error(`unknown direction ${direction}`);
const ms = performance.now() - started;
const cpu = process.cpuUsage(cpuBefore);
const cpuMs = (cpu.user + cpu.system) / 1000;
const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
const peakRssBytes = hwm ? Number(hwm[1]) * 1024 : process.resourceUsage().maxRSS * 1024;
process.stdout.write(`${JSON.stringify({ ms, cpuMs, peakRssBytes })}\n`);
