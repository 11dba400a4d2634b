/**
 * `~/.ssh/config` aliases and ProxyJump against the namespace testbed: hosts A and B sit on the same
 * bridge, so A can open a TCP connection to B. Tests point `sshConfig` at a temporary file (never the
 * real `~/.ssh/config`).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sshTransport, type SshTransport, type SshTransportOptions } from "runctl";
import { main as sshHostExample } from "../../examples/ssh-host.js";
import { leaseTestHosts, useTestbed, type HostLease, type TestHost } from "../testbed/inject.js";
import { freshKeyPair } from "../support/ssh-hosts.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";
import { rejection } from "../support/caught.js";

useTempRunctlHome("e2e-ssh-config-jump");
let lease: HostLease;
let a: TestHost;
let b: TestHost;
let configPath: string;
const opened: SshTransport[] = [];

function transport(options: SshTransportOptions): SshTransport {
  const t = sshTransport(options);
  opened.push(t);
  return t;
}

/** The client address B's sshd saw for this connection (`$SSH_CONNECTION`'s first field). */
async function clientAddressSeenBy(t: SshTransport): Promise<string> {
  const r = await t.exec({ script: 'printf %s "$SSH_CONNECTION"' });
  expect(r.exitCode, r.stderrTail).toBe(0);
  return r.stdout.split(" ")[0]!;
}

beforeAll(async () => {
  lease = await leaseTestHosts(2);
  [a, b] = lease.hosts as [TestHost, TestHost];
  const bed = useTestbed();
  for (const address of [a.address, b.address, bed.unusedAddress]) await bed.assertSafe(address);
  configPath = join(tempDir("ssh-config-e2e"), "config");
  const wrongKey = freshKeyPair("not-authorized").privateKeyPath;
  writeFileSync(
    configPath,
    [
      "# written by ssh-config-jump.test.ts",
      // Skipped by runctl: were it applied, every host here would resolve to an address nobody listens on.
      `Match all`,
      `  HostName ${bed.unusedAddress}`,
      `Host rc-a`,
      `  HostName ${a.address}`,
      `  User ${a.user}`,
      `  IdentityFile "${a.privateKeyPath}"`,
      "",
      // Several IdentityFiles: a missing one is skipped, a key the host refuses is followed by the next.
      `Host rc-a-keys`,
      `  HostName ${a.address}`,
      `  User ${a.user}`,
      `  IdentityFile /nonexistent/id_ed25519`,
      `  IdentityFile ${wrongKey}`,
      `  IdentityFile ${a.privateKeyPath}`,
      "",
      `Host rc-b rc-b-direct`,
      `  HostName = ${b.address}`,
      `  User ${b.user}`,
      `  IdentityFile ${b.privateKeyPath}`,
      `Host rc-b`,
      `  ProxyJump rc-a`,
      `Host rc-*`,
      `  UserKnownHostsFile ${a.knownHostsPath}`,
      `  StrictHostKeyChecking no`,
    ].join("\n"),
  );
});

afterAll(async () => {
  await Promise.all(opened.map((t) => t.close()));
  await lease?.release();
});

describe("SSH config aliases and ProxyJump (against the testbed)", () => {
  it("an alias of the config file resolves to its host, user, key and known_hosts, and a command runs", async () => {
    const t = transport({ host: "rc-a", sshConfig: configPath, connectRetries: 0 });
    const r = await t.exec(["hostname"]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim()).toBe(a.hostname);
    // A direct connection: the host sees the bridge (this machine) as the client.
    expect(await clientAddressSeenBy(t)).toBe(useTestbed().info.gateway);
  });

  it("IdentityFile lines accumulate and are tried in order", async () => {
    const t = transport({ host: "rc-a-keys", sshConfig: configPath, connectRetries: 0 });
    expect((await t.exec(["hostname"])).stdout.trim()).toBe(a.hostname);
  });

  it("ProxyJump from the config: B is reached through A (B sees A as its client)", async () => {
    const t = transport({ host: "rc-b", sshConfig: configPath, connectRetries: 0 });
    expect((await t.exec(["hostname"])).stdout.trim()).toBe(b.hostname);
    expect(await clientAddressSeenBy(t)).toBe(a.address);
    // proxyJump: "none" in code wins over the file.
    const direct = transport({ host: "rc-b", sshConfig: configPath, proxyJump: "none", connectRetries: 0 });
    expect(await clientAddressSeenBy(direct)).toBe(useTestbed().info.gateway);
  });

  it("an explicit proxyJump object, with no config file at all", async () => {
    const t = transport({
      host: b.address,
      username: b.user,
      privateKeyPath: b.privateKeyPath,
      knownHostsPath: b.knownHostsPath,
      sshConfig: false,
      proxyJump: [{ host: a.address, username: a.user, privateKeyPath: a.privateKeyPath }],
      connectRetries: 0,
    });
    expect(await clientAddressSeenBy(t)).toBe(a.address);
  });

  it("a run trains on B through the jump host: sync, setup, training and checkpoints all go via A", async () => {
    const { result, lines } = await sshHostExample({ host: { host: "rc-b", sshConfig: configPath }, verbose: false });
    expect(result.status).toBe("succeeded");
    expect(result.machine?.address).toBe("rc-b");
    expect(result.exitCode).toBe(0);
    expect(lines).toContain("TRAINING_DONE");
  });

  it("an unreachable jump host is HOST_UNREACHABLE naming hop 1", async () => {
    const bed = useTestbed();
    const t = transport({ host: "rc-b-direct", sshConfig: configPath, proxyJump: [{ host: bed.unusedAddress, username: a.user, privateKeyPath: a.privateKeyPath }], connectRetries: 0, readyTimeoutMs: 5_000 });
    const err = await rejection(t.connect(), "HOST_UNREACHABLE");
    expect(err.message).toMatch(/^Jump host 1 of 1 \(/);
    expect(err.message).toContain(bed.unusedAddress);
    expect(err.details).toMatchObject({ hop: 1, jumpHost: bed.unusedAddress });
  });

  it("a jump host whose key is not in known_hosts is HOST_KEY_MISMATCH naming the hop", async () => {
    const onlyB = join(tempDir("kh-only-b"), "known_hosts");
    const line = readFileSync(b.knownHostsPath, "utf8").split("\n").find((l) => l.startsWith(`${b.address} `));
    expect(line).toBeDefined();
    writeFileSync(onlyB, `${line}\n`);
    const t = transport({ host: "rc-b", sshConfig: configPath, knownHostsPath: onlyB, connectRetries: 0 });
    const err = await rejection(t.connect(), "HOST_KEY_MISMATCH");
    expect(err.details).toMatchObject({ hop: 1, jumpHost: `rc-a (${a.address})`, reason: "unknown" });
    // The same known_hosts file is enough for B reached directly: only the jump hop lacked a key.
    const direct = transport({ host: "rc-b-direct", sshConfig: configPath, knownHostsPath: onlyB, connectRetries: 0 });
    expect((await direct.exec(["hostname"])).stdout.trim()).toBe(b.hostname);
  });

  it("a jump host that cannot reach the target is HOST_UNREACHABLE saying so", async () => {
    const bed = useTestbed();
    const t = transport({ host: bed.unusedAddress, username: b.user, privateKeyPath: b.privateKeyPath, knownHostsPath: b.knownHostsPath, sshConfig: configPath, proxyJump: "rc-a", connectRetries: 0 });
    const err = await rejection(t.connect(), "HOST_UNREACHABLE");
    expect(err.message).toContain("could not open a connection");
    expect(err.details).toMatchObject({ hop: 1, via: `rc-a (${a.address})` });
  });
});
