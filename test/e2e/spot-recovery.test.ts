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

  it("a recovering run without checkpoint storage is refused at plan time", () => {
    const plan = Runctl.instance(sshHosts(hosts)).sync("test/fixtures/trainers").recover();
    expect(() => plan.train("train_mnist_e2e.py")).toThrowError(RunctlError);
    expect(() => plan.train("train_mnist_e2e.py")).toThrowError(/needs checkpoint storage/);
  });
});
