/**
 * Helpers for the SSH end-to-end tests: turn a leased test host into runctl's `SshHost` (after the
 * network-safety check) and read facts off a host through an independent SSH connection.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { sshTransport, type SshHost, type SshTransport } from "runctl";
import { leaseTestHosts, useTestbed, type TestHost } from "../testbed/inject.js";
import { tempDir } from "./temp-home.js";

/** The runctl host settings of a test host; throws unless its address routes via the testbed bridge. */
export async function sshHostOf(h: TestHost, extra: Partial<SshHost> = {}): Promise<SshHost> {
  await useTestbed().assertSafe(extra.host ?? h.address);
  return { host: h.address, port: h.port, username: h.user, privateKeyPath: h.privateKeyPath, knownHostsPath: h.knownHostsPath, ...extra };
}

/** A second, independent connection to a test host for checking what runctl did there. */
export async function inspectorOf(h: TestHost): Promise<SshTransport> {
  return sshTransport(await sshHostOf(h));
}

/** `path -> sha256` of every regular file below `dir` on the host, computed there by `sha256sum`. */
export async function remoteSha256(t: SshTransport, dir: string): Promise<Record<string, string>> {
  const r = await t.exec(["sh", "-c", 'cd "$1" && find . -type f -print0 | xargs -0 -r sha256sum', "sh", dir]);
  if (r.exitCode !== 0) throw new Error(`sha256sum in ${dir} failed: ${r.stderrTail}`);
  const out: Record<string, string> = {};
  for (const line of r.stdout.split("\n")) {
    const m = /^([0-9a-f]{64}) [ *]\.\/(.*)$/.exec(line);
    if (m) out[m[2]!] = m[1]!;
  }
  return out;
}

/** Command lines of runctl agents and trainers still running on the host (empty once a run is over). */
export async function leftoverProcesses(t: SshTransport, pattern = /runctl-agent|train_mnist_e2e|use_pkg\.py|pip install/): Promise<string[]> {
  const r = await t.exec(["ps", "-eo", "args"]);
  return r.stdout.split("\n").filter((l) => pattern.test(l));
}

/** Waits (up to `ms`) for every agent and trainer to exit; returns what is left (empty = clean). */
export async function settledProcesses(t: SshTransport, ms = 5_000): Promise<string[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = await leftoverProcesses(t);
    if (left.length === 0 || Date.now() > deadline) return left;
    await sleep(100);
  }
}

/** A fresh ed25519 key pair made by ssh-keygen: private key path and `ssh-ed25519 BASE64` public key. */
export function freshKeyPair(label: string): { privateKeyPath: string; publicKey: string } {
  const path = join(tempDir(`key-${label}`), "id_ed25519");
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", label, "-f", path], { stdio: "ignore" });
  const [type, blob] = readFileSync(`${path}.pub`, "utf8").trim().split(/\s+/);
  return { privateKeyPath: path, publicKey: `${type} ${blob}` };
}

/** One leased test host: its runctl settings, an independent inspector connection, and the way back. */
export interface LeasedHost {
  readonly testHost: TestHost;
  readonly host: SshHost;
  readonly inspector: SshTransport;
  /** Closes the inspector and returns the host to the lease pool. */
  readonly release: () => Promise<void>;
}

/** Leases one testbed host for a test file (call in `beforeAll`; call `release` in `afterAll`). */
export async function leaseOneHost(): Promise<LeasedHost> {
  const lease = await leaseTestHosts(1);
  const testHost = lease.hosts[0]!;
  const inspector = await inspectorOf(testHost);
  return {
    testHost,
    host: await sshHostOf(testHost),
    inspector,
    release: async () => {
      await inspector.close();
      await lease.release();
    },
  };
}
