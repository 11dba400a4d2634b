import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SshHost, SshTransport } from "runctl";
import { main as sshHostExample } from "../../examples/ssh-host.js";
import { main as sshRequirements } from "../../examples/ssh-requirements.js";
import { useTestbed, type TestHost } from "../testbed/inject.js";
import { freshKeyPair, leaseOneHost, settledProcesses, sshHostOf } from "../support/ssh-hosts.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";
import { rejection } from "../support/caught.js";

useTempRunctlHome("e2e-ssh-errors");
let testHost: TestHost;
let host: SshHost;
let inspector: SshTransport;
let release: (() => Promise<void>) | undefined;

beforeAll(async () => ({ testHost, host, inspector, release } = await leaseOneHost()));
afterAll(() => release?.());

/** Run folders on the host, to show a refused connection created nothing there. */
async function runDirs(): Promise<string[]> {
  const r = await inspector.exec(["sh", "-c", 'ls -1 "$1" 2>/dev/null || true', "sh", `${testHost.home}/.runctl/runs`]);
  return r.stdout.split("\n").filter(Boolean).sort();
}

/** Logins the host's sshd has accepted so far (its log, written into the testbed's state folder). */
function acceptedLogins(): number {
  return readFileSync(testHost.sshdLogPath, "utf8").split("\n").filter((l) => l.includes("Accepted publickey")).length;
}

describe("errors on SSH hosts: typed, with the cause, and nothing left running", () => {
  it("an address where nobody listens is HOST_UNREACHABLE (retryable) before anything runs", async () => {
    const unused = await sshHostOf(testHost, { host: useTestbed().unusedAddress, connectRetries: 0, readyTimeoutMs: 3_000 });
    const t0 = Date.now();
    const e = await rejection(sshHostExample({ host: unused, verbose: false }), "HOST_UNREACHABLE");
    expect(e.retryable).toBe(true);
    expect(e.message).toContain(useTestbed().unusedAddress);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it("a key the host does not accept is AUTH_FAILED; nothing is created on the host", async () => {
    const before = await runDirs();
    const stranger = freshKeyPair("stranger");
    const e = await rejection(sshHostExample({ host: { ...host, privateKeyPath: stranger.privateKeyPath }, verbose: false }), "AUTH_FAILED");
    expect(e.retryable).toBe(false);
    expect(await runDirs()).toEqual(before);
    expect(await settledProcesses(inspector)).toEqual([]);
  });

  it("a host key that differs from known_hosts is HOST_KEY_MISMATCH; nothing is sent to the impostor", async () => {
    const before = await runDirs();
    const knownHosts = join(tempDir("known-hosts"), "known_hosts");
    writeFileSync(knownHosts, `${testHost.address} ${freshKeyPair("other-host").publicKey}\n`);
    const e = await rejection(sshHostExample({ host: { ...host, knownHostsPath: knownHosts }, verbose: false }), "HOST_KEY_MISMATCH");
    expect(e.retryable).toBe(false);
    expect(e.message).toMatch(/MISMATCH/);
    expect(e.message).toContain(knownHosts);
    expect(await runDirs()).toEqual(before);
    expect(await settledProcesses(inspector)).toEqual([]);
  });

  it("a missing script is SCRIPT_NOT_FOUND before the host is contacted", async () => {
    const before = await runDirs();
    const logins = acceptedLogins();
    const e = await rejection(sshHostExample({ host, script: "no_such_script.py", verbose: false }), "SCRIPT_NOT_FOUND");
    expect(e.message).toContain("no_such_script.py");
    expect(acceptedLogins()).toBe(logins); // no SSH login happened
    expect(await runDirs()).toEqual(before);
  });

  it("a trainer that exits 3 is a failed run with exitCode 3, and nothing of it keeps running", async () => {
    const { result, lines } = await sshHostExample({ host, verbose: false, hyperparams: { "fail-at-step": 5 } });
    expect(result.status).toBe("failed");
    expect(result.exitCode).toBe(3);
    expect(result.error?.code).toBe("TRAINING_FAILED");
    expect(result.machine?.address).toBe(testHost.address);
    expect(lines).toContain("FAIL_AT_STEP 5: exiting with code 3 as requested");
    expect(lines).not.toContain("TRAINING_DONE");
    expect(await settledProcesses(inspector)).toEqual([]);
    // cleanup: true removes the run folder after a failure too.
    expect((await inspector.exec(["test", "-e", `${testHost.home}/.runctl/runs/${result.runId}`])).exitCode).toBe(1);
  });

  it("a failing install is SETUP_FAILED with pip's message; training never starts", async () => {
    const project = tempDir("ssh-bad-reqs");
    writeFileSync(join(project, "requirements.txt"), `# ssh-errors ${Date.now()}-${process.pid}\nrunctl-package-that-does-not-exist==9.9.9\n`);
    writeFileSync(join(project, "use_pkg.py"), "print('PKG imported')\n");
    const { result, lines, setup } = await sshRequirements({ host, projectDir: project, script: "use_pkg.py", verbose: false });
    expect(result.status).toBe("failed");
    expect(result.exitCode).toBeNull();
    expect(result.error?.code).toBe("SETUP_FAILED");
    expect(result.error?.outputTail).toMatch(/No matching distribution found for runctl-package-that-does-not-exist==9\.9\.9/);
    expect(setup).toBeUndefined();
    expect(lines.some((l) => l.startsWith("PKG"))).toBe(false);
    expect(await settledProcesses(inspector)).toEqual([]);
  });
});
