import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunEvent, SshHost, SshTransport } from "runctl";
import { main as sshSweep } from "../../examples/ssh-sweep.js";
import { leaseTestHosts, type HostLease, type TestHost } from "../testbed/inject.js";
import { inspectorOf, settledProcesses, sshHostOf } from "../support/ssh-hosts.js";
import { useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("e2e-ssh-multi");
let lease: HostLease;
let testHosts: TestHost[];
let hosts: SshHost[];
let inspectors: SshTransport[];

beforeAll(async () => {
  lease = await leaseTestHosts(3);
  testHosts = [...lease.hosts];
  hosts = await Promise.all(testHosts.map((h) => sshHostOf(h)));
  inspectors = await Promise.all(testHosts.map((h) => inspectorOf(h)));
  await Promise.all(inspectors.map((t) => t.connect()));
});
afterAll(async () => {
  await Promise.all((inspectors ?? []).map((t) => t.close()));
  await lease?.release();
});

/** RUNCTL_RUN_ID of every trainer process running on a host, read from its /proc there. */
async function trainerRunIds(t: SshTransport): Promise<string[]> {
  const script = 'for p in $(pgrep -f "[t]rain_mnist_e2e"); do tr "\\0" "\\n" < /proc/$p/environ | sed -n "s/^RUNCTL_RUN_ID=//p"; done';
  const r = await t.exec(["sh", "-c", script]);
  return r.stdout.split("\n").filter(Boolean).sort();
}

/** Entries of a folder under the host's runctl root. */
async function entries(t: SshTransport, home: string, sub: string): Promise<string[]> {
  const r = await t.exec(["sh", "-c", 'ls -1 "$1" 2>/dev/null || true', "sh", `${home}/.runctl/${sub}`]);
  return r.stdout.split("\n").filter(Boolean);
}

const timeOf = (events: readonly RunEvent[], pred: (e: RunEvent) => boolean): number => {
  const e = events.find(pred);
  expect(e).toBeDefined();
  return Date.parse(e!.time);
};

describe("several runs on a pool of SSH hosts", () => {
  it("runs a sweep from one base plan: three at once on three hosts, a fourth waits for a free host", async () => {
    const sweep = [0.05, 0.1, 0.2, 0.4].map((lr) => ({ lr, steps: 40, "sleep-per-step": 0.1 }));
    const events: RunEvent[][] = sweep.map(() => []);
    const training = new Set<number>();
    let snapshot: Promise<string[][]> | undefined;
    const outcomes = await sshSweep({
      hosts,
      sweep,
      verbose: false,
      onEvent: (index, event) => {
        events[index]!.push(event);
        if (event.type === "metric") training.add(index);
        // While the first three train at once: which trainers does each host's process table hold?
        if (!snapshot && [0, 1, 2].every((i) => training.has(i))) snapshot = Promise.all(inspectors.map(trainerRunIds));
      },
    });

    expect(outcomes.map((o) => o.result.status)).toEqual(["succeeded", "succeeded", "succeeded", "succeeded"]);
    expect(outcomes.map((o) => o.result.exitCode)).toEqual([0, 0, 0, 0]);
    const runIds = outcomes.map((o) => o.result.runId);
    expect(new Set(runIds).size).toBe(4);
    const addresses = outcomes.map((o) => o.result.machine!.address);
    // The first three got a host each; the fourth got one of them back.
    expect([...addresses.slice(0, 3)].sort()).toEqual(testHosts.map((h) => h.address).sort());
    const shared = addresses.slice(0, 3).indexOf(addresses[3]!);
    expect(shared).toBeGreaterThanOrEqual(0);

    // Each host's process table held exactly the trainer of the run it was given, and the fourth ran nowhere yet.
    expect(snapshot).toBeDefined();
    const seen = await snapshot!;
    testHosts.forEach((h, k) => expect(seen[k], h.address).toEqual([runIds[addresses.indexOf(h.address)]]));

    // Pool semantics: the fourth started syncing only after the run on its host had reached teardown.
    const queuedSync = timeOf(events[3]!, (e) => e.type === "phase" && e.phase === "syncing");
    const freed = timeOf(events[shared]!, (e) => e.type === "phase" && e.phase === "teardown");
    expect(queuedSync).toBeGreaterThanOrEqual(freed);
    const waited = queuedSync - timeOf(events[3]!, (e) => e.type === "phase" && e.phase === "provisioning");

    // Each host holds the run folders and checkpoints of its own runs only.
    for (const [k, h] of testHosts.entries()) {
      const mine = runIds.filter((_, i) => addresses[i] === h.address).sort();
      const runs = (await entries(inspectors[k]!, h.home, "runs")).filter((id) => runIds.includes(id)).sort();
      const ckpts = (await entries(inspectors[k]!, h.home, "checkpoints")).filter((id) => runIds.includes(id)).sort();
      expect(runs, h.address).toEqual(mine);
      expect(ckpts, h.address).toEqual(mine);
      expect(await settledProcesses(inspectors[k]!)).toEqual([]);
    }

    // Every run has its own committed checkpoints, and its latest verifies byte for byte from its host.
    for (const [i, o] of outcomes.entries()) {
      expect(o.latest?.runId).toBe(runIds[i]);
      expect(o.latest?.step).toBe(40);
      expect(o.latest?.storage.uri).toContain(addresses[i]);
      expect((await o.latest!.verify()).ok).toBe(true);
      expect(o.testAccuracy).toBeGreaterThan(0);
    }
    console.log(
      `[ssh-multi] runs took ${outcomes.map((o) => o.result.durationMs).join(" / ")} ms; the fourth waited ${waited} ms for ${addresses[3]}`,
    );
  });
});
