/**
 * The EC2 provider end to end on the testbed: the control plane is the fake EC2 account (the one
 * mocked boundary); "booting" an instance hands out a testbed host whose sshd takes the host key
 * from the user data and whose user the imported key pair. Everything else is real: SSH with the
 * pinned host key, sync, the agent, training, checkpoints committed to S3 by the host, cost, budget,
 * release and the sweep.
 */
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runctl, ec2, listRecordedResources, s3, type Ec2ProviderOptions, type Storage } from "runctl";
import { main as ec2Train } from "../../examples/ec2-train.js";
import { hostKeyOfUserData } from "../../src/providers/ec2/user-data.js";
import { fakeEc2, type FakeEc2 } from "../support/fake-ec2.js";
import { startImds, type TestImds } from "../support/imds-server.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../support/s3-server.js";
import { useTempRunctlHome } from "../support/temp-home.js";
import { leaseTestHosts, testbedInfo, useTestbed, type HostLease } from "../testbed/inject.js";
import type { TestHost } from "../testbed/testbed.js";

useTempRunctlHome("e2e-ec2");
let lease: HostLease;
let host: TestHost;
let server: TestS3Server;
let imds: TestImds;
let original: { hostKey: string; hostKeyPub: string; authorizedKeys: string };

beforeAll(async () => {
  lease = await leaseTestHosts(1);
  host = lease.hosts[0]!;
  server = await startS3Server({ address: testbedInfo().gateway, buckets: ["runctl-test"] });
  imds = await startImds(testbedInfo().gateway);
  original = {
    hostKey: readFileSync(host.hostKeyPath, "utf8"),
    hostKeyPub: readFileSync(`${host.hostKeyPath}.pub`, "utf8"),
    authorizedKeys: readFileSync(`${host.home}/.ssh/authorized_keys`, "utf8"),
  };
});
afterAll(async () => {
  if (original) {
    writeFileSync(host.hostKeyPath, original.hostKey, { mode: 0o600 });
    writeFileSync(`${host.hostKeyPath}.pub`, original.hostKeyPub);
    writeFileSync(`${host.home}/.ssh/authorized_keys`, original.authorizedKeys);
    await host.restart();
  }
  await imds?.stop();
  await server?.stop();
  await lease?.release();
});

/** An account whose instances boot as the leased testbed host, as cloud-init would set it up. */
function account(): FakeEc2 {
  return fakeEc2({
    pendingPolls: 2,
    boot: async ({ input, publicKey }) => {
      await useTestbed().assertSafe(host.address);
      const hostKey = hostKeyOfUserData(input.UserData ?? "");
      if (!hostKey || !publicKey) throw new Error("user data without a host key, or no key pair");
      writeFileSync(host.hostKeyPath, hostKey.privateKey, { mode: 0o600 });
      writeFileSync(`${host.hostKeyPath}.pub`, `${hostKey.publicKey}\n`);
      writeFileSync(`${host.home}/.ssh/authorized_keys`, `${original.authorizedKeys.trim()}\n`);
      appendFileSync(`${host.home}/.ssh/authorized_keys`, `${publicKey}\n`);
      await host.restart();
      return { publicIp: host.address };
    },
  });
}

function storage(prefix: string): Storage {
  return s3(`s3://runctl-test/${prefix}`, { ...S3RVER_CLIENT_SETTINGS, endpoint: server.endpoint, credentials: TEST_AWS_CREDENTIALS });
}

function provider(fake: FakeEc2, extra: Partial<Ec2ProviderOptions> = {}) {
  return ec2({
    region: "us-east-1",
    instanceType: "t3.micro",
    access: { kind: "ssh", allowSshFrom: testbedInfo().subnet, username: host.user },
    clients: { ec2: fake.ec2, ssm: fake.ssm },
    imdsEndpoint: imds.endpoint,
    pollMs: 50,
    shutdownAfterRunMs: 0,
    ...extra,
  });
}

describe("EC2 provider on the testbed (fake control plane, real everything else)", () => {
  it("examples/ec2-train.ts: launches, trains, commits checkpoints, reports cost, and leaves nothing behind", async () => {
    const fake = account();
    const store = storage("ec2-ckpt");
    const { runId, result, events } = await ec2Train({ provider: provider(fake), storage: store, costIntervalMs: 500, verbose: false });
    expect(result.status, JSON.stringify(result.error)).toBe("succeeded");
    expect(result.exitCode).toBe(0);
    expect(result.machine?.provider).toBe("ec2");
    // The trainer's own lines came back over SSH, to the last step.
    const lines = events.flatMap((e) => (e.type === "log" ? [e.line] : []));
    expect(lines).toContain("TRAINING_DONE");
    expect(lines.some((l) => l.startsWith("FINAL_STEP 40 "))).toBe(true);
    // Checkpoints were committed from the instance to S3 and verify byte for byte.
    const latest = await Runctl.checkpoints(store, runId).latest();
    expect(latest?.step).toBe(40);
    expect((await latest!.verify()).ok).toBe(true);
    // Cost: the catalog's t3.micro price, accrued over the run.
    expect(result.cost.hourlyUsd).toBe(0.0104);
    expect(result.cost.usd).toBeGreaterThan(0);
    expect(events.some((e) => e.type === "cost")).toBe(true);
    // Released: instance terminated (confirmed), key pair and security group deleted, ledger clean.
    const [instance] = [...fake.instances.values()];
    expect(instance!.state).toMatch(/shutting-down|terminated/);
    expect(fake.keyPairs.size).toBe(0);
    expect(fake.securityGroups.size).toBe(0);
    expect(listRecordedResources().filter((r) => r.runId === runId)).toEqual([]);
    // The sweep agrees: nothing of this run is left.
    const report = await Runctl.sweep({ provider: provider(fake), dryRun: true });
    expect(report.found.filter((r) => r.runId === runId)).toEqual([]);
  });

  it("a budget the run outgrows stops it on the machine: failed with BUDGET_EXCEEDED, instance terminated", async () => {
    const fake = account();
    // $36/h is a cent every second: a $0.04 budget lasts about four seconds of a run that wants 60.
    const { result } = await ec2Train({
      provider: provider(fake, { hourlyPriceUsd: 36 }),
      storage: storage("ec2-budget"),
      budget: { maxUsd: 0.04 },
      hyperparams: { steps: 600, "sleep-per-step": 0.1 },
      costIntervalMs: 250,
      verbose: false,
    });
    expect(result.status).toBe("failed");
    expect(result.error?.code).toBe("BUDGET_EXCEEDED");
    expect(result.cost.usd).toBeLessThan(0.2);
    expect([...fake.instances.values()][0]!.state).toMatch(/shutting-down|terminated/);
  });
});
