import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join, posix } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { isRunctlError, type RunEvent, type SshHost } from "runctl";
import { connect, syncAndVerify, trainThroughFaults, verifyOnHost } from "../../examples/ssh-faults.js";
import { sh } from "../testbed/sys.js";
import { leaseTestHosts, useTestbed, type HostLease, type TestHost } from "../testbed/inject.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("e2e-ssh-faults");
let lease: HostLease;
let h: TestHost;
let host: SshHost;
const trees: string[] = [];

/** A local tree of `files` random (incompressible) files of `bytesEach`, plus a few small ones in subfolders. */
function makeTree(label: string, files: number, bytesEach: number): string {
  const dir = tempDir(label);
  trees.push(dir);
  for (let i = 0; i < files; i++) {
    const sub = join(dir, `shard-${i % 4}`);
    mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, `blob-${i}.bin`), randomBytes(bytesEach));
  }
  mkdirSync(join(dir, "src", "pkg"), { recursive: true });
  writeFileSync(join(dir, "src", "train.py"), "print('hello')\n");
  writeFileSync(join(dir, "src", "pkg", "__init__.py"), "");
  writeFileSync(join(dir, "README.md"), `# ${label}\n`);
  return dir;
}

/** Command lines of every process on the test host (read from this machine's /proc, no SSH). */
async function hostProcesses(): Promise<string[]> {
  const out: string[] = [];
  for (const pid of await h.pids()) {
    try {
      out.push(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim());
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** runctl processes on the host: the agent (any subcommand) and the trainer. */
async function runctlProcesses(): Promise<string[]> {
  return (await hostProcesses()).filter((cmd) => /runctl-agent|train_mnist_e2e/.test(cmd));
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

/** ESTABLISHED TCP connections from this process to the test host. */
async function ourConnections(): Promise<string[]> {
  const r = await sh("ss", ["-Htnp", "state", "established", "dst", h.address], { allowFail: true });
  return r.stdout.split("\n").filter((l) => l.includes(`pid=${process.pid},`));
}

/** Nothing of runctl is left running on the host, and this process holds no connection to it. */
async function expectNothingLeftRunning(): Promise<void> {
  await waitFor("runctl processes on the host to end", async () => (await runctlProcesses()).length === 0, 20_000).catch(async (e: Error) => {
    throw new Error(`${e.message}: ${(await runctlProcesses()).join(" | ")}`);
  });
  expect(await ourConnections()).toEqual([]);
}

beforeAll(async () => {
  lease = await leaseTestHosts(1);
  h = lease.hosts[0]!;
  await useTestbed().assertSafe(h.address);
  host = { host: h.address, port: h.port, username: h.user, privateKeyPath: h.privateKeyPath, knownHostsPath: h.knownHostsPath };
});
afterEach(async () => h?.ensureHealthy());
afterAll(async () => {
  await Promise.all(trees.map((d) => rm(d, { recursive: true, force: true })));
  await lease?.release();
});

describe("SSH faults (scenario 7)", () => {
  it("a host killed mid-sync is a typed retryable error; after a restart the same sync converges to the verified tree", async () => {
    const tree = makeTree("faults-kill", 24, 1024 * 1024); // ~24 MB
    await h.setBandwidth(32); // ~4 MB/s: the upload takes ~6 s, long enough to kill the host during it
    const machine = await connect(host);
    try {
      const remoteDir = posix.join(machine.rootDir, "work", "faults-kill");
      const syncing = syncAndVerify(machine, tree, remoteDir);
      const settled = syncing.then(
        () => ({ ok: true as const }),
        (error: unknown) => ({ ok: false as const, error }),
      );
      // The sync is in flight once the agent's sync call (`sync`, or `sync-apply` without a two-way
      // stream) runs on the host; let a few MB land, then crash the machine.
      const agentSyncing = async (): Promise<boolean> => (await hostProcesses()).some((c) => /runctl-agent-\S*\/__main__\.py sync/.test(c));
      await waitFor("the agent's sync on the host", agentSyncing, 15_000);
      await sleep(1_500);
      expect(await agentSyncing(), "the sync finished before the kill: the tree is too small").toBe(true);
      await h.kill();
      const killedAt = Date.now();
      const outcome = await settled;
      const failedAfterMs = Date.now() - killedAt;
      expect(outcome.ok, "a sync whose host died must not resolve").toBe(false);
      const error = (outcome as { error: unknown }).error;
      expect(isRunctlError(error), String(error)).toBe(true);
      if (!isRunctlError(error)) return;
      expect(["TRANSPORT_ERROR", "HOST_UNREACHABLE"], error.message).toContain(error.code);
      expect(error.retryable).toBe(true);

      await h.restart();
      await h.clearFaults();
      // The host holds a partial copy now; the same call again (same machine object) repairs it.
      const partial = await verifyOnHost(machine, tree, remoteDir);
      expect(partial.ok).toBe(false);
      const { sync, verified } = await syncAndVerify(machine, tree, remoteDir);
      expect(verified.mismatches).toEqual([]);
      expect(verified.ok).toBe(true);
      expect(verified.files).toBe(27);
      expect(sync.files).toBe(27);
      expect(sync.uploadedFiles).toBeGreaterThan(0);
      expect(sync.uploadedFiles).toBeLessThanOrEqual(27);
      console.log(`[ssh-faults] kill mid-sync: ${error.code} ${failedAfterMs} ms after the kill; retry sent ${sync.uploadedFiles}/${sync.files} files, deleted ${sync.deletedFiles}, in ${sync.durationMs} ms`);
    } finally {
      await machine.release();
    }
    await expectNothingLeftRunning();
  });

  it("a partition during training: the run goes on, the client reconnects and loses no log line", async () => {
    const steps = 50;
    let fault: Promise<void> | undefined;
    let healedAt = 0;
    const report = await trainThroughFaults(host, {
      steps,
      sleepPerStep: 0.25,
      verbose: false,
      onEvent: (e: RunEvent) => {
        if (!fault && e.type === "metric" && (e.step ?? 0) >= 8) {
          fault = (async () => {
            await h.partition();
            await sleep(5_000);
            await h.heal();
            healedAt = Date.now();
          })();
        }
      },
    });
    await fault;
    const { result, events, lines, metricSteps, reconnects } = report;
    expect(result.status, JSON.stringify(result.error)).toBe("succeeded");
    expect(result.exitCode).toBe(0);
    expect(fault, "the partition was never injected").toBeDefined();
    expect(reconnects.length).toBeGreaterThan(0);

    // Every step's metric line exactly once, in order; the trainer ran once (never restarted).
    const stepsSeen = lines.filter((l) => l.startsWith('RUNCTL_METRIC {"step": ')).map((l) => (JSON.parse(l.slice("RUNCTL_METRIC ".length)) as { step: number }).step);
    const all = Array.from({ length: steps }, (_, i) => i + 1);
    expect(stepsSeen).toEqual(all);
    expect(metricSteps).toEqual(all);
    expect(lines.filter((l) => l.startsWith("RUN_INFO "))).toHaveLength(1);
    expect(lines.at(-1)).toBe("TRAINING_DONE");

    // The event stream: seq 1..N without gaps, log offsets strictly increasing, lines written during the partition arrived after the heal.
    expect(events.map((e) => e.seq)).toEqual(Array.from({ length: events.length }, (_, i) => i + 1));
    const offsets = events.flatMap((e) => (e.type === "log" ? [e.offset] : []));
    expect(offsets.every((o, i) => i === 0 || o > offsets[i - 1]!)).toBe(true);
    const reconnect = events.find((e) => e.type === "warning" && e.code === "RECONNECTING")!;
    const afterHeal = events.filter((e) => e.type === "metric" && Date.parse(e.time) >= healedAt);
    expect(afterHeal.length).toBeGreaterThan(0);
    expect(reconnect.seq).toBeLessThan(afterHeal[0]!.seq);
    console.log(`[ssh-faults] partition: ${reconnects.length} reconnect warning(s); run ${result.durationMs} ms; ${afterHeal.length} metric lines after the heal`);

    await expectNothingLeftRunning();
  });

  it("5% packet loss and an 80 mbit cap: a sync of a few MB still verifies", async () => {
    const tree = makeTree("faults-loss", 40, 100 * 1024); // ~4 MB
    await h.setLoss(5);
    await h.setBandwidth(80);
    const machine = await connect(host);
    try {
      const remoteDir = posix.join(machine.rootDir, "work", "faults-loss");
      const { sync, verified } = await syncAndVerify(machine, tree, remoteDir);
      expect(verified.mismatches).toEqual([]);
      expect(verified.ok).toBe(true);
      expect(sync.uploadedFiles).toBe(43);
      console.log(`[ssh-faults] 5% loss, 80 mbit: ${sync.uploadedBytes} bytes in ${sync.durationMs} ms`);
    } finally {
      await machine.release();
    }
    await expectNothingLeftRunning();
  });
});
