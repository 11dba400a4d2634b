import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runctl, local, type DoctorCheck } from "runctl";
import { s3 } from "runctl/aws";
import { runCli } from "../../src/cli/run-cli.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../support/s3-server.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

const home = useTempRunctlHome("int-cli-doctor");
const repo = fileURLToPath(new URL("../..", import.meta.url));

/** The bin's source as its own process (under tsx), as a user runs `runctl doctor`. */
function runctl(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/cli-main.ts", ...args], { cwd: repo, env: { ...process.env, RUNCTL_HOME: home }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  return new Promise((resolve) => child.on("close", (code) => resolve({ code: code ?? -1, out, err })));
}

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await runCli(argv, { stdout: { write: (s: string) => (out += s) }, stderr: { write: (s: string) => (err += s) }, cwd: repo });
  return { code, out, err };
}

let server: TestS3Server;
beforeAll(async () => {
  server = await startS3Server({ buckets: ["ckpt"] });
});
afterAll(() => server?.stop());

describe("runctl doctor", () => {
  it("on this machine: exit 0, one line per check with the python check, and a summary", async () => {
    const { code, out, err } = await runctl(["doctor"]);
    expect(err).toBe("");
    expect(code).toBe(0);
    expect(out).toMatch(/^\[ok\] {3}this machine \(.+\): runs locally/m);
    expect(out).toMatch(/^\[ok\] {3}python3 >= 3\.8 on localhost: Python 3\.\d+\.\d+$/m);
    expect(out).toMatch(/free disk in .+\/local on localhost: /);
    expect(out).toMatch(/GPU visibility on localhost: /);
    expect(out).toMatch(/^doctor: \d+ ok, \d+ warning\(s\), 0 failed$/m);
  });

  it("--json: schemaVersion 1 and the checks; a plan module's local checkpoint folder is listed too", async () => {
    const { code, out } = await cli(["doctor", "examples/quickstart.ts", "--json"]);
    expect(code).toBe(0);
    const doc = JSON.parse(out) as { schemaVersion: number; ok: boolean; checks: DoctorCheck[] };
    expect(doc.schemaVersion).toBe(1);
    expect(doc.ok).toBe(true);
    expect(doc.checks.map((c) => c.id)).toEqual(expect.arrayContaining(["transport", "python", "disk", "gpu", "storage"]));
    expect(doc.checks.find((c) => c.id === "python")?.status).toBe("ok");
  });

  it("a bad --host is a usage error (exit 2); a plan module without plan/script is refused", async () => {
    expect((await cli(["doctor", "--host", "a b"])).code).toBe(2);
    const bad = join(tempDir("doctor-bad"), "bad.mjs");
    writeFileSync(bad, "export const nothing = 1;\n");
    const r = await cli(["doctor", bad]);
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/must export plan/);
    // FILE errors name the command the user typed, not `plan`.
    const missing = await cli(["doctor", join(tempDir("doctor-missing"), "nope.ts")]);
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/^runctl: doctor: no file .*nope\.ts \(USAGE\)\n/);
    const readme = await cli(["doctor", "README.md"]);
    expect(readme.code).toBe(2);
    expect(readme.err).toMatch(/^runctl: doctor: README\.md is not a plan module/);
  });

  it("S3 checkpoint storage: a bucket that exists is ok, a missing one fails with NoSuchBucket and the fix; the machine needs boto3 or aws", async () => {
    const settings = { ...S3RVER_CLIENT_SETTINGS, endpoint: server.endpoint, credentials: TEST_AWS_CREDENTIALS, retry: { retries: 0 } };
    const good = await Runctl.instance(local()).checkpoints({ storage: s3("s3://ckpt/runs", settings) }).doctor();
    expect(good.checks.find((c) => c.id === "storage")).toMatchObject({ status: "ok", title: "storage s3://ckpt/runs reachable from here" });
    expect(good.checks.some((c) => c.id === "s3-tools")).toBe(true);
    const missing = await Runctl.instance(local()).checkpoints({ storage: s3("s3://no-such-bucket/runs", settings) }).doctor();
    expect(missing.ok).toBe(false);
    const check = missing.checks.find((c) => c.id === "storage");
    expect(check).toMatchObject({ status: "fail", code: "NoSuchBucket" });
    expect(check?.fix).toMatch(/bucket name/);
  });
});
