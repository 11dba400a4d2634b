import { existsSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runctl, RunctlError, sshHosts, type RunEvent, type SshHost, type Storage } from "runctl";
import { s3 } from "runctl/aws";
import { main as spotRecovery } from "../../examples/spot-recovery.js";
import { main as quickstart } from "../../examples/quickstart.js";
import { leaseTestHosts, testbedInfo, type HostLease } from "../testbed/inject.js";
import { startImds, type TestImds } from "../support/imds-server.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../support/s3-server.js";
import { sshHostOf } from "../support/ssh-hosts.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";
import { FIXTURE_TRAINER, FIXTURE_TRAINERS_DIR } from "../fixtures/trainers.js";

useTempRunctlHome("e2e-spot");
let lease: HostLease;
let hosts: SshHost[];
let imds: TestImds[];
let server: TestS3Server;

function bucket(prefix: string): Storage {
  return s3(`s3://runctl-test/${prefix}`, { ...S3RVER_CLIENT_SETTINGS, endpoint: server.endpoint, credentials: TEST_AWS_CREDENTIALS });
}
const valueOf = (lines: readonly string[], tag: string): string | undefined => lines.find((l) => l.startsWith(`${tag} `))?.slice(tag.length + 1);
/** The trainer's RUN_INFO lines: one per machine the run trained on. */
const runInfos = (events: readonly RunEvent[]): string[] => events.flatMap((e) => (e.type === "log" && e.line.startsWith("RUN_INFO") ? [e.line] : []));

beforeAll(async () => {
  lease = await leaseTestHosts(3);
  const gateway = testbedInfo().gateway;
  imds = await Promise.all(lease.hosts.map(() => startImds(gateway)));
  hosts = await Promise.all(lease.hosts.map((h, i) => sshHostOf(h, { imdsEndpoint: imds[i]!.endpoint, imdsPollMs: 200 })));
  server = await startS3Server({ address: gateway, buckets: ["runctl-test"] });
});
afterAll(async () => {
  await server?.stop();
  await Promise.all((imds ?? []).map((i) => i.stop()));
  await lease?.release();
});

describe("spot interruption and managed recovery", () => {
  it("interrupted on one host, final checkpoint committed, resumed on another, same final model, 0 steps lost", async () => {
    const storage = bucket("spot-1");
    let notified = false;
    const { runId, result, lines, events } = await spotRecovery({
      hosts,
      storage,
      verbose: false,
      onEvent: (event) => {
        // The first attempt lands on the pool's first free host: its metadata service gives notice.
        if (event.type === "metric" && event.step === 20 && !notified) {
          notified = true;
          imds[0]!.interruptIn(120);
        }
      },
    });
    imds[0]!.clear();
    expect(result.status).toBe("succeeded");
    expect(result.restarts).toBe(1);
    expect(result.interruptions).toHaveLength(1);
    expect(result.interruptions[0]!.lostSteps).toBe(0);
    expect(result.machine?.address).not.toBe(hosts[0]!.host);
    const types = events.map((e) => (e.type === "phase" ? `phase:${e.phase}` : e.type));
    expect(types).toEqual(expect.arrayContaining(["interruption", "phase:recovering", "recovered"]));
    const saved = Number(valueOf(lines, "SIGTERM_CHECKPOINT"));
    expect(lines).toContain(`RESUMED_FROM_STEP ${saved}`);
    expect(lines).toContain(`START_STEP ${saved + 1}`);
    expect(runInfos(events)).toHaveLength(2);
    // The resumed run's checkpoints continue the same run id in storage.
    expect((await Runctl.checkpoints(storage, runId).latest())?.step).toBe(60);
    // Deterministic trainer: the same final weights as a run that was never interrupted.
    const straight: string[] = [];
    await quickstart({ checkpointDir: tempDir("spot-straight"), verbose: false, project: FIXTURE_TRAINERS_DIR, script: FIXTURE_TRAINER, hyperparams: { steps: 60, "checkpoint-every": 10 }, onEvent: (e) => void (e.type === "log" && straight.push(e.line)) });
    expect(valueOf(lines, "FINAL_STEP")).toBe(valueOf(straight, "FINAL_STEP"));
  });

  it("an interruption beyond maxRestarts ends the run as interrupted, with every checkpoint intact", async () => {
    const storage = bucket("spot-2");
    let interrupts = 0;
    const { runId, result } = await spotRecovery({
      hosts,
      storage,
      verbose: false,
      recover: { maxRestarts: 1, backoffMs: 200 },
      onEvent: (event) => {
        if (event.type === "metric" && (event.step === 15 || event.step === 35) && interrupts < 2) {
          interrupts += 1;
          // First run on host 0, the recovered one on the next free host (1).
          imds[interrupts - 1]!.interruptIn(120);
        }
      },
    });
    imds.forEach((i) => i.clear());
    expect(result.status).toBe("interrupted");
    expect(result.restarts).toBe(1);
    const list = await Runctl.checkpoints(storage, runId).list();
    expect(list.length).toBeGreaterThanOrEqual(3);
    for (const c of list) expect((await c.verify()).ok).toBe(true);
  });

  it("a host killed without notice: recovery from the last periodic checkpoint on another host", async () => {
    const storage = bucket("spot-3");
    let killed = false;
    const { result, lines } = await spotRecovery({
      hosts,
      storage,
      verbose: false,
      recover: { hostLostAfterMs: 5000, backoffMs: 200 },
      onEvent: async (event) => {
        if (event.type === "metric" && event.step === 25 && !killed) {
          killed = true;
          await lease.hosts[0]!.kill();
        }
      },
    });
    await lease.hosts[0]!.restart();
    expect(result.status).toBe("succeeded");
    expect(result.restarts).toBe(1);
    const i = result.interruptions[0]!;
    expect(i.reason).toMatch(/lost the machine/);
    expect(i.resumedFromStep).toBe(20);
    expect(i.lostSteps).toBeGreaterThanOrEqual(5);
    expect(lines).toContain("RESUMED_FROM_STEP 20");
  });

  it("a partition shorter than the grace period: no recovery, the run simply continues", async () => {
    const storage = bucket("spot-4");
    let partitioned = false;
    const { result, events } = await spotRecovery({
      hosts,
      storage,
      verbose: false,
      recover: { hostLostAfterMs: 30_000 },
      onEvent: async (event) => {
        if (event.type === "metric" && event.step === 10 && !partitioned) {
          partitioned = true;
          await lease.hosts[0]!.partition();
          setTimeout(() => void lease.hosts[0]!.heal(), 4000);
        }
      },
    });
    expect(result.status).toBe("succeeded");
    expect(result.restarts).toBe(0);
    expect(events.some((e) => e.type === "warning" && e.code === "RECONNECTING")).toBe(true);
    expect(events.some((e) => e.type === "recovered")).toBe(false);
  });

  it("a spot notice on a pool of 2: the replacement is provisioned and staged before the old attempt ends; the new trainer starts after it, from the final checkpoint", async () => {
    const storage = bucket("spot-ahead");
    const pool = hosts.slice(0, 2);
    // The interrupted trainer holds its save until this file exists: it is written once the
    // replacement is reported ready, so the order below does not depend on timing.
    const hold = join(lease.hosts[0]!.home, `hold-${process.pid}-${Date.now()}`);
    let noticed = -1;
    let released = false;
    try {
      const { result, lines, events } = await spotRecovery({
        hosts: pool,
        storage,
        verbose: false,
        hyperparams: { "hold-on-sigterm": hold },
        onEvent: (event) => {
          if (event.type === "metric" && event.step === 15 && noticed < 0) {
            noticed = Math.max(0, lease.hosts.slice(0, 2).findIndex((h) => existsSync(join(h.home, ".runctl", "runs", event.runId))));
            imds[noticed]!.interruptIn(120);
          }
          if (event.type === "warning" && event.code === "REPLACEMENT_READY" && !released) {
            released = true;
            writeFileSync(hold, "go\n");
          }
        },
      });
      imds.forEach((i) => i.clear());
      const other = pool[1 - noticed]!.host;
      expect(released).toBe(true);
      expect(result.status).toBe("succeeded");
      expect(result.restarts).toBe(1);
      expect(result.interruptions[0]!.lostSteps).toBe(0);
      // The run resumed on the machine prepared during the notice.
      expect(result.machine?.address).toBe(other);
      const at = (pred: (e: RunEvent) => boolean): number => events.findIndex(pred);
      const ready = at((e) => e.type === "warning" && e.code === "REPLACEMENT_READY");
      const handled = at((e) => e.type === "warning" && e.code === "INTERRUPTION_HANDLED");
      const recovering = at((e) => e.type === "phase" && e.phase === "recovering");
      const interruption = at((e) => e.type === "interruption");
      const saved = Number(valueOf(lines, "SIGTERM_CHECKPOINT"));
      const finalCheckpoint = at((e) => e.type === "checkpoint" && e.step === saved);
      expect((events[ready] as { message: string }).message).toContain(other);
      // notice -> replacement ready -> final checkpoint committed, handled -> old attempt over -> recovering
      expect(interruption).toBeGreaterThanOrEqual(0);
      expect(ready).toBeGreaterThan(interruption);
      expect(finalCheckpoint).toBeGreaterThan(ready);
      expect(handled).toBeGreaterThan(finalCheckpoint);
      expect(recovering).toBeGreaterThan(handled);
      // Nothing was provisioned twice: one provisioning and one sync after recovering, the replacement's.
      const after = events.slice(recovering);
      expect(after.filter((e) => e.type === "phase" && e.phase === "provisioning")).toHaveLength(1);
      expect(after.filter((e) => e.type === "phase" && e.phase === "syncing")).toHaveLength(1);
      expect(after.filter((e) => e.type === "sync")).toHaveLength(1);
      // The new trainer started after the old one had saved and ended, from that final checkpoint.
      const logs = events.flatMap((e, i) => (e.type === "log" ? [{ i, line: e.line }] : []));
      const secondStart = logs.filter((l) => l.line.startsWith("RUN_INFO"))[1]!.i;
      expect(secondStart).toBeGreaterThan(recovering);
      expect(secondStart).toBeGreaterThan(logs.find((l) => l.line.startsWith("SIGTERM_CHECKPOINT"))!.i);
      expect(lines).toContain(`RESUMED_FROM_STEP ${saved}`);
      expect(runInfos(events)).toHaveLength(2);
      expect((await Runctl.checkpoints(storage, result.runId).latest())?.step).toBe(60);
    } finally {
      imds.forEach((i) => i.clear());
      rmSync(hold, { force: true });
    }
  });

  it("a run canceled while its replacement is prepared gives the replacement back", async () => {
    const storage = bucket("spot-ahead-cancel");
    const pool = hosts.slice(0, 2);
    const hold = join(lease.hosts[0]!.home, `hold-${process.pid}-${Date.now()}-c`);
    const provider = sshHosts(pool, { acquireTimeoutMs: 5000 });
    const run = Runctl.instance(provider)
      .sync(FIXTURE_TRAINERS_DIR)
      .checkpoints({ storage })
      .recover({ maxRestarts: 3 })
      .train(FIXTURE_TRAINER, { hyperparams: { steps: 60, "checkpoint-every": 10, "sleep-per-step": 0.1, "hold-on-sigterm": hold } });
    let noticed = false;
    let ready = false;
    try {
      for await (const event of run) {
        if (event.type === "metric" && event.step === 15 && !noticed) {
          noticed = true;
          const i = Math.max(0, lease.hosts.slice(0, 2).findIndex((h) => existsSync(join(h.home, ".runctl", "runs", run.runId))));
          imds[i]!.interruptIn(120);
        }
        if (event.type === "warning" && event.code === "REPLACEMENT_READY" && !ready) {
          ready = true;
          await run.cancel();
          writeFileSync(hold, "go\n");
        }
      }
      const result = await run;
      expect(ready).toBe(true);
      expect(result.status).not.toBe("succeeded");
      expect(result.restarts).toBe(0);
      // Both hosts of the pool are free again: the replacement was released, not kept.
      const machines = await Promise.all([provider.provision({ runId: "probe-a" }), provider.provision({ runId: "probe-b" })]);
      expect(new Set(machines.map((m) => m.id)).size).toBe(2);
      await Promise.all(machines.map((m) => provider.release(m)));
    } finally {
      imds.forEach((i) => i.clear());
      rmSync(hold, { force: true });
    }
  });

  it("a recovering run without checkpoint storage is refused at plan time", () => {
    const plan = Runctl.instance(sshHosts(hosts)).sync("test/fixtures/trainers").recover();
    expect(() => plan.train("train_mnist_e2e.py")).toThrowError(RunctlError);
    expect(() => plan.train("train_mnist_e2e.py")).toThrowError(/needs checkpoint storage/);
  });
});
