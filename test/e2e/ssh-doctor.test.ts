import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { doctor, sshHosts, type SshHost } from "runctl";
import { useTestbed, type TestHost } from "../testbed/inject.js";
import { freshKeyPair, leaseOneHost, sshHostOf } from "../support/ssh-hosts.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

const home = useTempRunctlHome("e2e-ssh-doctor");
const repo = fileURLToPath(new URL("../..", import.meta.url));
let testHost: TestHost;
let host: SshHost;
let release: (() => Promise<void>) | undefined;

beforeAll(async () => ({ testHost, host, release } = await leaseOneHost()));
afterAll(() => release?.());

/** The bin's source as its own process, with HOME set (so `~/.ssh/known_hosts` is a test's own). */
function runctl(args: string[], env: Record<string, string>): Promise<{ code: number; out: string; err: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/cli-main.ts", ...args], { cwd: repo, env: { ...process.env, RUNCTL_HOME: home, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  return new Promise((resolve) => child.on("close", (code) => resolve({ code: code ?? -1, out, err })));
}

describe("doctor on SSH hosts of the testbed", () => {
  it("a healthy host: connected with its host key verified, Python and disk ok, nothing failed", async () => {
    const report = await doctor(sshHosts(host));
    const byId = new Map(report.checks.map((c) => [c.id, c]));
    expect(byId.get("transport")).toMatchObject({ status: "ok", title: `SSH to ${testHost.user}@${testHost.address}:${testHost.port}` });
    expect(byId.get("transport")?.detail).toContain(testHost.knownHostsPath);
    expect(byId.get("python")).toMatchObject({ status: "ok", detail: expect.stringMatching(/^Python 3\.\d+\.\d+$/) });
    expect(byId.get("disk")?.title).toContain(`${testHost.home}/.runctl`);
    expect(byId.get("gpu")).toBeDefined();
    expect(report.checks.filter((c) => c.status === "fail")).toEqual([]);
    expect(report.ok).toBe(true);
  });

  it("an unknown host key fails with the ssh-keyscan line to run; the key is not trusted (CLI, exit 1)", async () => {
    const fakeHome = tempDir("doctor-home");
    const { code, out } = await runctl(["doctor", "--host", `${testHost.user}@${testHost.address}:${testHost.port}`, "--identity", testHost.privateKeyPath], { HOME: fakeHome });
    expect(code).toBe(1);
    expect(out).toMatch(new RegExp(`^\\[FAIL\\] SSH to ${testHost.user}@${testHost.address.replace(/\./g, "\\.")}:${testHost.port}: host key not in .*known_hosts: ssh-\\S+ SHA256:\\S+ \\(HOST_KEY_MISMATCH\\)$`, "m"));
    expect(out).toMatch(new RegExp(`fix: Compare SHA256:\\S+ .* then run: ssh-keyscan -p ${testHost.port} -t ssh-\\S+ ${testHost.address.replace(/\./g, "\\.")} >> ${fakeHome}/\\.ssh/known_hosts$`, "m"));
    expect(out).toMatch(/^doctor: 0 ok, 0 warning\(s\), 1 failed$/m);
  });

  it("an ssh-config alias with an unknown key: the fix scans the alias's HostName and Port, not the alias", async () => {
    const dir = tempDir("doctor-alias");
    const knownHosts = join(dir, "known_hosts");
    writeFileSync(knownHosts, "");
    const config = join(dir, "config");
    writeFileSync(config, ["Host rc-doctor-alias", `  HostName ${testHost.address}`, `  Port ${testHost.port}`, `  User ${testHost.user}`, `  IdentityFile ${testHost.privateKeyPath}`, ""].join("\n"));
    const report = await doctor(sshHosts({ host: "rc-doctor-alias", sshConfig: config, knownHostsPath: knownHosts }));
    expect(report.checks[0]).toMatchObject({ id: "transport", status: "fail", code: "HOST_KEY_MISMATCH" });
    expect(report.checks[0]?.fix).toMatch(new RegExp(`then run: ssh-keyscan -p ${testHost.port} -t ssh-\\S+ ${testHost.address.replace(/\./g, "\\.")} >> ${knownHosts}$`));
  });

  it("a changed host key fails too, with the ssh-keygen -R line", async () => {
    const knownHosts = join(tempDir("doctor-known-hosts"), "known_hosts");
    writeFileSync(knownHosts, `${testHost.address} ${freshKeyPair("doctor-other-host").publicKey}\n`);
    const report = await doctor(sshHosts({ ...host, knownHostsPath: knownHosts }));
    expect(report.ok).toBe(false);
    expect(report.checks[0]).toMatchObject({ id: "transport", status: "fail", code: "HOST_KEY_MISMATCH" });
    expect(report.checks[0]?.fix).toContain(`ssh-keygen -R ${testHost.address} -f ${knownHosts}`);
  });

  it("an address where nobody listens fails with HOST_UNREACHABLE and its fix; no machine check runs", async () => {
    const unused = await sshHostOf(testHost, { host: useTestbed().unusedAddress, connectRetries: 0, readyTimeoutMs: 3_000 });
    const report = await doctor(sshHosts(unused));
    expect(report.ok).toBe(false);
    expect(report.checks).toEqual([expect.objectContaining({ id: "transport", status: "fail", code: "HOST_UNREACHABLE", fix: expect.stringMatching(/address and port/) })]);
  });
});
