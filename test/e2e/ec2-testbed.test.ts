/**
 * The EC2 provider end to end on the testbed: the control plane is the fake EC2 account (the one
 * mocked boundary); "booting" an instance hands out a testbed host whose sshd takes the host key
 * from the user data and whose user the imported key pair. Everything else is real: SSH with the
 * pinned host key, sync, the agent, training, checkpoints committed to S3 by the host, cost, budget,
 * release and the sweep.
 */
import { execFileSync } from "node:child_process";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runctl, listRecordedResources, type Storage } from "runctl";
import { ec2, s3, type Ec2ProviderOptions } from "runctl/aws";
import { main as ec2Train } from "../../examples/ec2-train.js";
import { BOOT_POWER_OFF_CANCEL, hostKeyOfUserData } from "../../src/providers/ec2/user-data.js";
import { caught } from "../support/caught.js";
import { fakeEc2, type FakeEc2 } from "../support/fake-ec2.js";
import { startImds, type TestImds } from "../support/imds-server.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../support/s3-server.js";
import { useTempRunctlHome, tempDir } from "../support/temp-home.js";
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

    // Issue 10, item 8: the expiry is the run's budget (30 min in the example) plus 2 h, not a flat day ...
    const launchTags = Object.fromEntries(
      fake.inputsOf<{ TagSpecifications: { ResourceType: string; Tags: { Key: string; Value: string }[] }[] }>("RunInstances")[0]!.TagSpecifications.find((t) => t.ResourceType === "instance")!.Tags.map((t) => [t.Key, t.Value]),
    );
    expect(Date.parse(launchTags["runctl:expires-at"]!) - Date.parse(launchTags["runctl:created-at"]!)).toBe(30 * 60_000 + 2 * 3600_000);
    // ... and the engine renewed it while it followed the run (the instance, its volume, group and key pair).
    const renewals = fake.inputsOf<{ Resources: string[]; Tags: { Key: string; Value: string }[] }>("CreateTags");
    expect(renewals.length).toBeGreaterThanOrEqual(1);
    expect(renewals[0]!.Resources).toEqual(expect.arrayContaining([instance!.id, `vol-${instance!.id.slice(2)}`]));
    expect(renewals[0]!.Resources.some((r) => r.startsWith("sg-"))).toBe(true);
    expect(renewals[0]!.Resources.some((r) => r.startsWith("key-"))).toBe(true);
    expect(renewals[0]!.Tags.map((t) => t.Key)).toEqual(["runctl:expires-at"]);
    const renewalCalls = fake.calls().map((c, i) => [c, i] as const);
    // Renewed after launch and before release.
    expect(renewalCalls.find(([c]) => c === "CreateTags")![1]).toBeGreaterThan(renewalCalls.find(([c]) => c === "RunInstances")![1]);
    expect(renewalCalls.find(([c]) => c === "CreateTags")![1]).toBeLessThan(renewalCalls.find(([c]) => c === "TerminateInstances")![1]);
    // Item 10: the agent on the instance was told to cancel the boot-time power-off the user data scheduled.
    const spec = JSON.parse(readFileSync(`${host.home}/.runctl/runs/${runId}/spec.json`, "utf8")) as { shutdown: { cancelBootPowerOff?: string[] } };
    expect(spec.shutdown.cancelBootPowerOff).toEqual(BOOT_POWER_OFF_CANCEL);
  });

  it("a key the instance refuses is AUTH_FAILED at once, not retried for readyTimeoutMs; the instance is terminated (issue 10, item 11)", async () => {
    const dir = tempDir("e2e-key");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "id"), "-C", "not-authorized"]);
    // Boots with runctl's host key (pinned) but only the host's own authorized keys: ours is refused.
    const fake = fakeEc2({
      pendingPolls: 2,
      boot: async ({ input }) => {
        await useTestbed().assertSafe(host.address);
        const hostKey = hostKeyOfUserData(input.UserData ?? "");
        if (!hostKey) throw new Error("user data without a host key");
        writeFileSync(host.hostKeyPath, hostKey.privateKey, { mode: 0o600 });
        writeFileSync(`${host.hostKeyPath}.pub`, `${hostKey.publicKey}\n`);
        writeFileSync(`${host.home}/.ssh/authorized_keys`, original.authorizedKeys);
        await host.restart();
        return { publicIp: host.address };
      },
    });
    const p = ec2({
      region: "us-east-1",
      instanceType: "t3.micro",
      access: { kind: "ssh", keyPairName: "someone-elses", privateKeyPath: join(dir, "id"), allowSshFrom: testbedInfo().subnet, username: host.user },
      clients: { ec2: fake.ec2, ssm: fake.ssm },
      pollMs: 50,
      readyTimeoutMs: 60_000,
    });
    const started = Date.now();
    const err = await caught(p.provision({ runId: "20261204-120000-authno" }));
    expect(err.code).toBe("AUTH_FAILED");
    expect(err.message).toMatch(/SSH authentication to .* failed/);
    expect(Date.now() - started).toBeLessThan(30_000);
    const [instance] = [...fake.instances.values()];
    expect(err.message).toContain(`instance ${instance!.id}; it was terminated`);
    expect(instance!.state).toMatch(/shutting-down|terminated/);
    expect(fake.securityGroups.size).toBe(0);
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
