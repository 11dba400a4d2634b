/**
 * The SSM transport against a fake SSM control plane (test/support/fake-ssm.ts: aws-sdk-client-mock,
 * nothing leaves this process) whose SendCommand really runs the script on this machine, and a real
 * S3 server (s3rver on loopback) for staging: stdin, files and whole output travel through it, and
 * the machine side really runs the `aws` CLI against it. The outcomes checked are the ones a user
 * sees: exit codes, bytes, files on disk, errors with stable codes, objects left in the bucket.
 */
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { CancelCommandCommand, SendCommandCommand } from "@aws-sdk/client-ssm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { s3, type S3Storage } from "../../src/storage/s3/index.js";
import { ssmTransport, type SsmTransport, type SsmTransportOptions } from "../../src/transport/ssm/index.js";
import { caught } from "../support/caught.js";
import { fakeSsm, type FakeSsm, type FakeSsmOptions } from "../support/fake-ssm.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../support/s3-server.js";
import { tempDir } from "../support/temp-home.js";

let server: TestS3Server;
const fakes: FakeSsm[] = [];
const transports: SsmTransport[] = [];

beforeAll(async () => {
  server = await startS3Server({ buckets: ["runctl-test"] });
});
afterAll(async () => {
  await server?.stop();
});
afterEach(async () => {
  for (const t of transports.splice(0)) await t.close();
  for (const f of fakes.splice(0)) f.restore();
});

/** The instance profile the fake "instance" has: credentials for the S3 server, the Debian aws CLI v2 first on PATH. */
function machineEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: TEST_AWS_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: TEST_AWS_CREDENTIALS.secretAccessKey,
    AWS_DEFAULT_REGION: "us-east-1",
    PATH: `/usr/bin:${process.env["PATH"] ?? ""}`,
    ...extra,
  };
}

function bucket(prefix: string): S3Storage {
  return s3(`s3://runctl-test/${prefix}`, { ...S3RVER_CLIENT_SETTINGS, endpoint: server.endpoint, credentials: TEST_AWS_CREDENTIALS });
}

interface Setup {
  readonly ssm: FakeSsm;
  readonly t: SsmTransport;
  readonly staging: S3Storage | undefined;
}

/** A fake SSM + a transport to it; with `staging` (default) an S3 staging area of its own. */
function setup(options: { staging?: boolean; fake?: FakeSsmOptions; transport?: Partial<SsmTransportOptions>; env?: Record<string, string> } = {}): Setup {
  const staging = options.staging === false ? undefined : bucket(`stage-${randomBytes(4).toString("hex")}`);
  const ssm = fakeSsm({ env: machineEnv(options.env), ...(staging ? { s3: staging.client } : {}), ...options.fake });
  fakes.push(ssm);
  const t = ssmTransport({ instanceId: ssm.instanceId, client: ssm.client, user: null, pollMs: 20, maxPollMs: 150, ...(staging ? { staging } : {}), ...options.transport });
  transports.push(t);
  return { ssm, t, staging };
}

async function keysUnder(storage: S3Storage, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of storage.list(prefix)) keys.push(o.key);
  return keys.sort();
}

async function textOf(storage: S3Storage, key: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of await storage.get(key)) chunks.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks).toString("utf8");
}

/** The script the machine ran, decoded from the base64 wrapper the transport sends. */
function decodedScript(ssm: FakeSsm, index: number): string {
  const line = ssm.invocations[index]?.script ?? "";
  const b64 = /printf '%s' ([A-Za-z0-9+/=]+) \| base64 -d/.exec(line)?.[1];
  return b64 ? Buffer.from(b64, "base64").toString("utf8") : line;
}

const sha256 = (data: Buffer): string => createHash("sha256").update(data).digest("hex");

describe("exec", () => {
  it("passes nasty arguments byte for byte and never lets the shell or SSM interpret them", async () => {
    const { t, ssm } = setup({ staging: false });
    const witness = join(tempDir("ssm-quote"), "pwned");
    const args = ["a b", "it's", '"double"', `$(touch ${witness})`, `\`touch ${witness}\``, "line1\nline2", "", "{{ssm:/secret/param}}", "*", "-n", "ünïcødé", "back\\slash", "semi;colon && echo no", "$HOME", "tab\there"];
    const r = await t.exec(["python3", "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", ...args]);
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(args);
    expect(existsSync(witness)).toBe(false);
    // What went to SSM carries no braces at all: `{{ }}` interpolation cannot touch it.
    expect(ssm.invocations[0]!.script).not.toMatch(/[{}]/);
    expect(ssm.mock.commandCalls(SendCommandCommand)[0]!.args[0].input.DocumentName).toBe("AWS-RunShellScript");
  });

  it("reports exit codes of failing commands as results, with output and tails", async () => {
    const { t } = setup({ staging: false });
    expect((await t.exec(["sh", "-c", "exit 3"])).exitCode).toBe(3);
    expect((await t.exec(["false"])).exitCode).toBe(1);
    expect((await t.exec(["runctl-no-such-command-xyz"])).exitCode).toBe(127);
    const r = await t.exec({ script: "echo out; echo err >&2; exit 5" });
    expect(r).toMatchObject({ exitCode: 5, signal: null, stdout: "out\n" });
    expect(r.stderrTail).toContain("err");
    expect(r.durationMs).toBeGreaterThan(0);
  });

  it("runs in cwd with env exported (quoted), and yields output chunks when the command ends", async () => {
    const { t } = setup({ staging: false });
    const dir = join(tempDir("ssm-cwd"), "with space 'and quote'");
    mkdirSync(dir);
    const h = t.exec(["sh", "-c", 'pwd; printf "%s|%s" "$X" "$Y"'], { cwd: dir, env: { X: "va l'ue $HOME `id`", Y: "" } });
    const chunks: string[] = [];
    for await (const c of h) if (c.stream === "stdout") chunks.push(Buffer.from(c.data).toString("utf8"));
    const r = await h;
    expect(r.exitCode).toBe(0);
    expect(chunks.join("")).toBe(`${dir}\nva l'ue $HOME \`id\`|`);
    await expect(Promise.resolve(t.exec(["true"], { env: { "BAD-NAME": "x" } }))).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  });

  it("wraps commands in sudo -n -u USER -H, with cwd and env inside", async () => {
    // No sudo in the test machine: a stand-in that records the user and runs what follows `--`.
    const bin = tempDir("ssm-sudo");
    writeFileSync(join(bin, "sudo"), '#!/bin/sh\nwhile [ "$1" != "--" ]; do [ "$1" = "-u" ] && { shift; echo "$1" > "$SUDO_LOG"; }; shift; done\nshift\nexec env -i PATH="$PATH" HOME=/home/fake "$@"\n');
    chmodSync(join(bin, "sudo"), 0o755);
    const log = join(bin, "user");
    const { t, ssm } = setup({ staging: false, transport: { user: "ubuntu" }, env: { PATH: `${bin}:/usr/bin:/bin`, SUDO_LOG: log } });
    const r = await t.exec(["sh", "-c", 'printf "%s %s %s" "$(pwd)" "$HOME" "$V"'], { cwd: "/tmp", env: { V: "kept through sudo" } });
    expect(r.stdout).toBe("/tmp /home/fake kept through sudo");
    expect(readFileSync(log, "utf8").trim()).toBe("ubuntu");
    expect(decodedScript(ssm, 0)).toMatch(/^exec sudo -n -u ubuntu -H -- sh -c /);
  });

  it("refuses stdin without staging, saying what to pass", async () => {
    const { t } = setup({ staging: false });
    const err = await caught(Promise.resolve(t.exec(["cat"], { stdin: "x" })));
    expect(err.code).toBe("UNSUPPORTED");
    expect(err.message).toMatch(/staging/);
  });

  it("stages stdin through S3 (streamed), pipes it into the command, and deletes the object", async () => {
    const { t, staging, ssm } = setup();
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const r = await t.exec(["sha256sum"], { stdin: Readable.from([data.subarray(0, 1_000_000), data.subarray(1_000_000)]) });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.split(" ")[0]).toBe(sha256(data));
    expect((await t.exec(["cat"], { stdin: "héllo\n" })).stdout).toBe("héllo\n");
    // A command that does not read its stdin is not a failed fetch.
    expect((await t.exec(["true"], { stdin: randomBytes(2 * 1024 * 1024) })).exitCode).toBe(0);
    // Nothing secret or large went through SSM: the script fetches the object.
    expect(decodedScript(ssm, 0)).toMatch(/aws s3 cp s3:\/\/runctl-test\/stage-\w+\/runctl-staging\/i-0123456789abcdef0\/[\w-]+\.stdin -/);
    expect(ssm.invocations[0]!.script.length).toBeLessThan(4000);
    expect(await keysUnder(staging!, "runctl-staging/")).toEqual(["runctl-staging/i-0123456789abcdef0/_runctl.json"]);
  });

  it("fails with TRANSPORT_ERROR when the machine cannot fetch the staged stdin", async () => {
    const { t } = setup({ env: { AWS_ACCESS_KEY_ID: "", AWS_SECRET_ACCESS_KEY: "", AWS_SHARED_CREDENTIALS_FILE: "/nonexistent", AWS_CONFIG_FILE: "/nonexistent", AWS_EC2_METADATA_DISABLED: "true" } });
    const err = await caught(Promise.resolve(t.exec(["cat"], { stdin: "data" })));
    expect(err.code).toBe("TRANSPORT_ERROR");
    expect(err.message).toMatch(/could not fetch the stdin/);
  });

  it("reads output beyond SSM's inline limits whole from S3, then deletes it", async () => {
    const { t, staging } = setup();
    const r = await t.exec(["python3", "-c", "import sys; sys.stdout.write(''.join('%06d\\n' % i for i in range(20000))); sys.stderr.write('e' * 20000)"]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.length).toBe(140_000);
    expect(r.stdout.split("\n")[19_999]).toBe("019999");
    expect(r.stderrTail).toBe("e".repeat(20_000));
    expect(await keysUnder(staging!, "runctl-staging/i-0123456789abcdef0/output/")).toEqual([]);
  });

  it("without staging, marks output cut at 24,000 characters", async () => {
    const { t } = setup({ staging: false });
    const r = await t.exec(["python3", "-c", "print('x' * 50000)"]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.length).toBe(24_000);
    expect(r.stderrTail).toMatch(/SSM returned only the first 24000 characters of stdout; pass `staging`/);
  });

  it("on abort cancels the command (its processes stop) and rejects with ABORTED", async () => {
    const { t, ssm } = setup({ staging: false });
    const file = join(tempDir("ssm-abort"), "ticks");
    const controller = new AbortController();
    const h = t.exec(["sh", "-c", `while :; do echo tick >> '${file}'; sleep 0.05; done`], { signal: controller.signal });
    for (let i = 0; i < 200 && !existsSync(file); i++) await sleep(25);
    expect(existsSync(file)).toBe(true);
    controller.abort();
    const err = await caught(Promise.resolve(h));
    expect(err.code).toBe("ABORTED");
    expect(ssm.mock.commandCalls(CancelCommandCommand)).toHaveLength(1);
    await ssm.invocations[0]!.done;
    expect(ssm.invocations[0]!.status).toBe("Cancelled");
    const size = statSync(file).size;
    await sleep(300);
    expect(statSync(file).size).toBe(size);
  });

  it("survives throttling bursts and InvocationDoesNotExist, and gives up on endless throttling with a retryable TRANSPORT_ERROR", async () => {
    const { t, ssm } = setup({ staging: false, fake: { invisiblePolls: 4 } });
    ssm.throttle(3, ["SendCommand"]);
    expect((await t.exec(["echo", "one"])).stdout).toBe("one\n");
    ssm.throttle(5, ["GetCommandInvocation"]);
    expect((await t.exec(["echo", "two"])).stdout).toBe("two\n");
    expect(ssm.calls("SendCommand")).toBe(5); // 3 throttled + 2 sent: a command never runs twice
    expect(ssm.invocations).toHaveLength(2);

    const { t: impatient, ssm: busy } = setup({ staging: false, transport: { throttleRetries: 1 } });
    busy.throttle(100, ["SendCommand"]);
    const err = await caught(Promise.resolve(impatient.exec(["echo"])));
    expect(err).toMatchObject({ code: "TRANSPORT_ERROR", retryable: true });
    expect(err.message).toMatch(/throttled/);
    expect(busy.invocations).toHaveLength(0);
  });
});

describe("files", () => {
  it("putFile and getFile go through staging byte for byte, with the mode, and leave nothing staged", async () => {
    const { t, staging } = setup();
    const dir = tempDir("ssm-files");
    const local = join(dir, "model.bin");
    const data = randomBytes(700_000);
    writeFileSync(local, data);
    const remote = join(dir, "remote", "deep", "model copy.bin");
    await t.putFile(local, remote, { mode: 0o640 });
    expect(sha256(readFileSync(remote))).toBe(sha256(data));
    expect(statSync(remote).mode & 0o777).toBe(0o640);
    const back = join(dir, "back", "model.bin");
    await t.getFile(remote, back);
    expect(sha256(readFileSync(back))).toBe(sha256(data));
    expect((await caught(t.getFile(join(dir, "missing.bin"), join(dir, "x")))).code).toBe("NOT_FOUND");
    expect(existsSync(join(dir, "x"))).toBe(false);
    expect((await caught(t.putFile(join(dir, "missing.bin"), remote))).code).toBe("NOT_FOUND");
    expect(await keysUnder(staging!, "runctl-staging/")).toEqual(["runctl-staging/i-0123456789abcdef0/_runctl.json"]);
  });

  it("without staging, small files go inline and big ones are refused", async () => {
    const { t } = setup({ staging: false });
    const dir = tempDir("ssm-inline");
    const small = randomBytes(10_000);
    writeFileSync(join(dir, "small"), small);
    await t.putFile(join(dir, "small"), join(dir, "out", "small"), { mode: 0o600 });
    expect(readFileSync(join(dir, "out", "small")).equals(small)).toBe(true);
    expect(statSync(join(dir, "out", "small")).mode & 0o777).toBe(0o600);
    await t.getFile(join(dir, "out", "small"), join(dir, "back"));
    expect(readFileSync(join(dir, "back")).equals(small)).toBe(true);
    writeFileSync(join(dir, "big"), randomBytes(40_000));
    expect((await caught(t.putFile(join(dir, "big"), join(dir, "out", "big")))).code).toBe("UNSUPPORTED");
    expect((await caught(t.getFile(join(dir, "big"), join(dir, "back-big")))).code).toBe("UNSUPPORTED");
  });
});

describe("readiness, staging marker and close", () => {
  it("ready() waits for Online and a finished round trip; a never-online agent is MACHINE_NOT_READY", async () => {
    const { t, ssm } = setup({ staging: false, fake: { agent: "unregistered" } });
    const exec = await caught(Promise.resolve(t.exec(["true"])));
    expect(exec).toMatchObject({ code: "MACHINE_NOT_READY", retryable: true });
    const started = Date.now();
    const err = await caught(t.ready({ timeoutMs: 800 }));
    expect(err).toMatchObject({ code: "MACHINE_NOT_READY", retryable: true });
    expect(err.message).toMatch(/not registered with SSM/);
    expect(Date.now() - started).toBeLessThan(5000);
    ssm.agent = "connection-lost";
    expect((await caught(t.ready({ timeoutMs: 500 }))).message).toMatch(/PingStatus was ConnectionLost/);
    // The agent comes online while ready() waits: it resolves only after `echo ready` finished.
    setTimeout(() => (ssm.agent = "online"), 300);
    await t.ready({ timeoutMs: 10_000 });
    const echo = ssm.invocations.at(-1)!;
    expect(echo.status).toBe("Success");
    expect(echo.stdout.toString()).toBe("ready\n");
  });

  it("writes the staging marker once, and close() removes the whole staging folder", async () => {
    const { t, staging } = setup({ transport: { runId: "run-42", owner: "tester@box" } });
    await t.exec(["cat"], { stdin: "a" });
    await t.exec(["cat"], { stdin: "b" });
    const marker = JSON.parse(await textOf(staging!, "runctl-staging/run-42/_runctl.json")) as Record<string, string>;
    expect(marker["runctl:run-id"]).toBe("run-42");
    expect(marker["runctl:owner"]).toBe("tester@box");
    const ttl = Date.parse(marker["runctl:expires-at"]!) - Date.parse(marker["runctl:created-at"]!);
    expect(ttl).toBe(24 * 3600_000);
    // Leftovers (say, an interrupted transfer) are removed with the folder.
    await staging!.put("runctl-staging/run-42/leftover.stdin", "x");
    await staging!.put("runctl-staging/other-run/keep.stdin", "y");
    await t.close();
    expect(await keysUnder(staging!, "runctl-staging/run-42/")).toEqual([]);
    expect(await keysUnder(staging!, "runctl-staging/other-run/")).toEqual(["runctl-staging/other-run/keep.stdin"]);
    expect((await caught(Promise.resolve(t.exec(["true"])))).code).toBe("TRANSPORT_ERROR");
  });

  it("validates options before contacting anything", () => {
    expect(() => ssmTransport({ instanceId: "i-xyz" })).toThrow(/instanceId/);
    expect(() => ssmTransport({ instanceId: "i-0123456789abcdef0", user: "bad user" })).toThrow(/user/);
    expect(() => ssmTransport({ instanceId: "i-0123456789abcdef0", runId: "../x" })).toThrow(/runId/);
    const t = ssmTransport({ instanceId: "i-0123456789abcdef0", region: "us-east-1" });
    expect(t.buffered).toBe(true);
    expect(t.host).toBe("i-0123456789abcdef0");
  });
});
