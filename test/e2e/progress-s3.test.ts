/**
 * Progress of the transfers the agent makes through S3 (issue 16, item 6): a `.data()` download and
 * the `.outputs()` upload of a local run against s3rver each report bytes that only grow and end at
 * their total, the data's before training and the outputs' before the `outputs` event. Needs boto3
 * or the aws CLI on this machine (the e2e tier installs both); no testbed host.
 */
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runctl, local, type ProgressEvent, type RunEvent } from "runctl";
import { s3 } from "runctl/aws";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../support/s3-server.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("progress-s3");

const KiB = 1024;
let server: TestS3Server;
const bucket = (prefix: string) => s3(`s3://runctl-test/${prefix}`, { ...S3RVER_CLIENT_SETTINGS, endpoint: server.endpoint, credentials: TEST_AWS_CREDENTIALS });

beforeAll(async () => {
  server = await startS3Server({ buckets: ["runctl-test"] });
});
afterAll(async () => {
  await server?.stop();
});

describe("progress of S3 transfers on the machine", () => {
  it("a data download and an outputs upload report bytes up to their totals", async () => {
    const data = bucket("progress-data");
    const sizes = [300 * KiB, 200 * KiB, 100 * KiB];
    for (const [i, size] of sizes.entries()) await data.put(`part-${i}.bin`, randomBytes(size));
    const code = tempDir("progress-s3-code");
    writeFileSync(
      join(code, "train.py"),
      "import os\nfor i in range(4):\n    open(os.path.join(os.environ['RUNCTL_OUTPUT_DIR'], 'out-%d.bin' % i), 'wb').write(os.urandom(64 * 1024))\nprint('DATA', sorted(os.listdir(os.environ['RUNCTL_DATA_DIR'])), flush=True)\n",
    );
    const run = Runctl.instance(local()).sync(code).data(data, { to: "data" }).outputs(bucket("progress-out")).train("train.py");
    const events: RunEvent[] = [];
    for await (const event of run) events.push(event);
    const result = await run;
    expect(result.status, JSON.stringify(result.error)).toBe("succeeded");

    const of = (phase: ProgressEvent["phase"]): ProgressEvent[] => events.filter((e): e is ProgressEvent => e.type === "progress" && e.phase === phase);
    const at = (pred: (e: RunEvent) => boolean): number => events.findIndex(pred);
    for (const [phase, total] of [["data", 600 * KiB], ["output", 4 * 64 * KiB]] as const) {
      const series = of(phase);
      expect(series.length, phase).toBeGreaterThan(1);
      expect(new Set(series.map((e) => e.bytesTotal)), phase).toEqual(new Set([total]));
      const done = series.map((e) => e.bytesDone);
      expect(done, phase).toEqual([...done].sort((a, b) => a - b));
      expect(done.at(-1), phase).toBe(total);
    }
    expect(at((e) => e.type === "progress" && e.phase === "data" && e.bytesDone === e.bytesTotal)).toBeLessThan(at((e) => e.type === "phase" && e.phase === "training"));
    expect(at((e) => e.type === "progress" && e.phase === "output" && e.bytesDone === e.bytesTotal)).toBeLessThan(at((e) => e.type === "outputs"));
    const listed = events.find((e) => e.type === "log" && e.line.startsWith("DATA "));
    for (const name of ["part-0.bin", "part-1.bin", "part-2.bin"]) expect(listed?.type === "log" ? listed.line : "").toContain(`'${name}'`);
  });
});
