import type { RunInstancesCommandInput } from "@aws-sdk/client-ec2";
import { GetParameterCommand } from "@aws-sdk/client-ssm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runctl, RunctlError, type Machine, type Storage } from "runctl";
import { ec2, s3 } from "runctl/aws";
import { listRecordedResources } from "../../src/ledger/resource-ledger.js";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BOOT_POWER_OFF_CANCEL, buildUserData, hostKeyOfUserData, powerOffMinutesOfUserData } from "../../src/providers/ec2/user-data.js";
import { caught } from "../support/caught.js";
import { capacityError, ec2Error, fakeEc2, type FakeEc2 } from "../support/fake-ec2.js";
import { fakeSsm, type FakeSsm } from "../support/fake-ssm.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../support/s3-server.js";
import { useTempRunctlHome, tempDir } from "../support/temp-home.js";

useTempRunctlHome("ec2-provider");
const REGION = "us-east-1";
const INSTANCE = "i-0123456789abcdef0";
let server: TestS3Server;
let staging: Storage;

beforeAll(async () => {
  server = await startS3Server({ buckets: ["staging"] });
  staging = s3("s3://staging/runctl", { ...S3RVER_CLIENT_SETTINGS, endpoint: server.endpoint, credentials: TEST_AWS_CREDENTIALS });
});
afterAll(async () => {
  await server?.stop();
});

/** An EC2 account whose instances answer over SSM by running commands on this machine. */
function account(options: Parameters<typeof fakeEc2>[0] = {}, ssmInstance = INSTANCE): { fake: FakeEc2; ssm: FakeSsm } {
  const ssm = fakeSsm({ instanceId: ssmInstance, env: { AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER", AWS_DEFAULT_REGION: "us-east-1" } });
  // AWS's public AMI parameters live in SSM too.
  ssm.mock.on(GetParameterCommand).callsFake((input: { Name: string }) => ({ Parameter: { Name: input.Name, Type: "String", Value: input.Name.includes("deeplearning") ? "ami-0a1b2c3d4e5f60718" : "ami-0f0e0d0c0b0a09080" } }));
  return { fake: fakeEc2({ instanceIds: [INSTANCE, INSTANCE.replace("0123", "0999"), INSTANCE.replace("0123", "0888")], ...options }), ssm };
}

const ssmOptions = (a: { fake: FakeEc2; ssm: FakeSsm }, extra: Record<string, unknown> = {}) =>
  ({ region: REGION, instanceType: "t3.micro", instanceProfile: "runctl-test", access: { kind: "ssm" as const, staging, user: null }, clients: { ec2: a.fake.ec2, ssm: a.ssm.client }, pollMs: 5, ...extra });

/** The RunctlError a call throws synchronously. */
function thrown(fn: () => unknown): RunctlError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(RunctlError);
    return err as RunctlError;
  }
  throw new Error("expected a throw");
}

const mutating = (calls: readonly string[]) => calls.filter((c) => /^(Run|Create|Import|Authorize|Terminate|Delete)/.test(c));

describe("ec2(): input is checked before anything is created", () => {
  it.each([
    [{ region: "nowhere", instanceType: "t3.micro" }, /region/],
    [{ region: REGION, instanceType: "not a type" }, /instanceType/],
    [{ region: REGION }, /instanceType.*instanceId/],
    [{ region: REGION, instanceType: "t3.micro", ami: "ubuntu" }, /ami/],
    [{ region: REGION, instanceType: "t3.micro", access: { kind: "ssh", allowSshFrom: "0.0.0.0" } }, /CIDR/],
    [{ region: REGION, instanceType: "t3.micro", access: { kind: "ssh", keyPairName: "mine" } }, /privateKeyPath/],
    [{ region: REGION, instanceType: "t3.micro", access: { kind: "ssm", staging: {} } }, /access/],
    [{ region: REGION, instanceType: "t3.micro", tags: { "runctl:run-id": "x" } }, /tags/],
  ])("%j", (options, message) => {
    const err = thrown(() => ec2(options as never));
    expect(err.code).toBe("INVALID_ARGUMENT");
    expect(err.message).toMatch(message);
  });

  it("an unknown instance type or AMI fails with nothing created", async () => {
    const a = account();
    const bad = await caught(ec2(ssmOptions(a, { instanceType: "x9.huge" })).provision({ runId: "r-badtype" }));
    expect(bad.code).toBe("INVALID_ARGUMENT");
    const noAmi = await caught(ec2(ssmOptions(a, { ami: "ami-00000000000000000" })).provision({ runId: "r-badami" }));
    expect(noAmi.code).toBe("INVALID_ARGUMENT");
    expect(mutating(a.fake.calls())).toEqual([]);
    a.ssm.restore();
  });
});

describe("ec2(): launching", () => {
  it("tags every resource at launch, terminates on shutdown, and hands out a machine that answers over SSM", async () => {
    const a = account();
    const logged: string[] = [];
    const provider = ec2(ssmOptions(a, { owner: "tester@ci", ttlMs: 3600_000, tags: { team: "ml" }, logger: (entry: { source: string; message: string }) => logged.push(`${entry.source}: ${entry.message}`) }));
    const machine = await provider.provision({ runId: "r-launch" });
    try {
      const input = a.fake.inputsOf<Record<string, any>>("RunInstances")[0]!;
      expect(input.InstanceInitiatedShutdownBehavior).toBe("terminate");
      expect(input.MetadataOptions.HttpTokens).toBe("required");
      expect(input.IamInstanceProfile).toEqual({ Name: "runctl-test" });
      expect(input.BlockDeviceMappings[0].DeviceName).toBe("/dev/sda1"); // from DescribeImages, not assumed
      expect(input.ImageId).toBe("ami-0f0e0d0c0b0a09080"); // CPU type: Ubuntu's public parameter
      expect(input.ClientToken).toBe("r-launch-1-1"); // the run's first launch, its first attempt
      expect(input.InstanceMarketOptions).toBeUndefined();
      const specs = input.TagSpecifications as { ResourceType: string; Tags: { Key: string; Value: string }[] }[];
      expect(specs.map((s) => s.ResourceType).sort()).toEqual(["instance", "network-interface", "volume"]);
      for (const spec of specs) {
        const tags = Object.fromEntries(spec.Tags.map((t) => [t.Key, t.Value]));
        expect(tags).toMatchObject({ "runctl:run-id": "r-launch", "runctl:owner": "tester@ci", Name: "runctl-r-launch", team: "ml" });
        expect(Date.parse(tags["runctl:expires-at"]!) - Date.parse(tags["runctl:created-at"]!)).toBe(3600_000);
      }
      // SSM access: a security group with no inbound rule, no key pair.
      const [sg] = [...a.fake.securityGroups.values()];
      expect(sg!.ingress).toEqual([]);
      expect(a.fake.keyPairs.size).toBe(0);
      // The machine really answers: a command ran through SSM.
      const r = await machine.transport.exec(["sh", "-c", "echo hello-from-$0", "ssm"]);
      expect(r.stdout.trim()).toBe("hello-from-ssm");
      expect(machine.hourlyPriceUsd).toBe(0.0104);
      expect(machine.shutdown?.command).toEqual(["sudo", "-n", "shutdown", "-h", "now"]);
      expect(listRecordedResources().map((r) => `${r.kind}:${r.runId}`)).toEqual(expect.arrayContaining(["instance:r-launch", "security-group:r-launch"]));
    } finally {
      await provider.release(machine);
      a.ssm.restore();
    }
    // Release terminated the instance (confirmed), then deleted the group past a DependencyViolation.
    expect(a.fake.instances.get(INSTANCE)?.state).toMatch(/shutting-down|terminated/);
    expect(a.fake.securityGroups.size).toBe(0);
    expect(a.fake.calls().filter((c) => c === "DeleteSecurityGroup").length).toBeGreaterThanOrEqual(2);
    expect(listRecordedResources().filter((r) => r.runId === "r-launch")).toEqual([]);
    // The logger saw the provider's steps and the SSM transport's command.
    const steps = logged.filter((l) => l.startsWith("provider: "));
    expect(steps).toHaveLength(3);
    expect(steps[0]).toBe("provider: ec2 us-east-1: launching t3.micro for run r-launch");
    expect(steps[1]).toMatch(new RegExp(`^provider: ec2 us-east-1: ${INSTANCE} running at \\d+\\.\\d+\\.\\d+\\.\\d+$`));
    expect(steps[2]).toBe(`provider: ec2 us-east-1: ${INSTANCE} terminated`);
    expect(logged.some((l) => l.startsWith("transport: ") && l.includes("echo hello-from-$0"))).toBe(true);
  });

  it("GPU types get the Deep Learning AMI and a spot request tagged at launch", async () => {
    const a = account();
    const provider = ec2(ssmOptions(a, { instanceType: "g5.xlarge", spot: true }));
    const machine = await provider.provision({ runId: "r-gpu" });
    await provider.release(machine);
    a.ssm.restore();
    const input = a.fake.inputsOf<Record<string, any>>("RunInstances")[0]!;
    expect(input.ImageId).toBe("ami-0a1b2c3d4e5f60718");
    expect(input.InstanceMarketOptions).toEqual({ MarketType: "spot", SpotOptions: { SpotInstanceType: "one-time", InstanceInterruptionBehavior: "terminate" } });
    expect(input.TagSpecifications.map((s: { ResourceType: string }) => s.ResourceType)).toContain("spot-instances-request");
    expect(input.BlockDeviceMappings[0].Ebs.VolumeSize).toBe(100);
    expect(a.fake.calls()).toContain("DescribeSpotPriceHistory");
    expect(machine.hourlyPriceUsd).toBe(0.3017); // the market price in the instance's zone, not the catalog's
  });

  it("no spot capacity: every zone in order, then on-demand only when allowed (and it says so)", async () => {
    const zones = ["us-east-1a", "us-east-1b"];
    const refuse = (input: RunInstancesCommandInput): void => {
      if (input.InstanceMarketOptions) throw input.Placement?.AvailabilityZone === "us-east-1a" ? capacityError("t3.micro", "us-east-1a") : ec2Error("SpotMaxPriceTooLow", "Your Spot request price of 0.001 is lower than the minimum required Spot request fulfillment price of 0.0035.");
    };
    const strict = account({ onRunInstances: refuse });
    const err = await caught(ec2(ssmOptions(strict, { spot: { maxPriceUsd: 0.001 }, availabilityZones: zones })).provision({ runId: "r-nocap" }));
    strict.ssm.restore();
    expect(err.code).toBe("CAPACITY_UNAVAILABLE");
    expect(err.message).toMatch(/us-east-1a: InsufficientInstanceCapacity.*us-east-1b: SpotMaxPriceTooLow/);
    expect(err.message).toMatch(/fallbackToOnDemand/);
    expect(strict.fake.inputsOf<Record<string, any>>("RunInstances").map((i) => [i.Placement.AvailabilityZone, Boolean(i.InstanceMarketOptions)])).toEqual([["us-east-1a", true], ["us-east-1b", true]]);
    expect(strict.fake.instances.size).toBe(0);
    expect(strict.fake.securityGroups.size).toBe(0); // the group made for it was deleted again

    const warnings: string[] = [];
    const lenient = account({ onRunInstances: refuse });
    const provider = ec2(ssmOptions(lenient, { spot: { fallbackToOnDemand: true }, availabilityZones: zones, onWarning: (m: string) => warnings.push(m) }));
    const machine = await provider.provision({ runId: "r-fallback" });
    await provider.release(machine);
    lenient.ssm.restore();
    expect(lenient.fake.inputsOf<Record<string, any>>("RunInstances").map((i) => [i.Placement.AvailabilityZone, Boolean(i.InstanceMarketOptions)])).toEqual([
      ["us-east-1a", true],
      ["us-east-1b", true],
      ["us-east-1a", false],
    ]);
    expect(machine.record["market"]).toBe("on-demand");
    expect(warnings.join("\n")).toMatch(/launched .* on-demand as allowed/);
  });

  it("a spot instance that ends at once for want of capacity moves on to the next zone", async () => {
    const second = INSTANCE.replace("0123", "0999");
    const a = account({ endBeforeRunning: (n) => (n === 1 ? "Server.InsufficientInstanceCapacity" : undefined) }, second);
    const provider = ec2(ssmOptions(a, { spot: true, availabilityZones: ["us-east-1a", "us-east-1c"] }));
    const machine = await provider.provision({ runId: "r-ended" });
    await provider.release(machine);
    a.ssm.restore();
    expect(a.fake.inputsOf<Record<string, any>>("RunInstances").map((i) => i.Placement.AvailabilityZone)).toEqual(["us-east-1a", "us-east-1c"]);
    expect(machine.id).toBe(second);
    expect(a.fake.instances.get(INSTANCE)?.state).toBe("terminated"); // the first one is gone
  });

  it("throttling (RequestLimitExceeded) is retried with the same ClientToken: one instance, not two", async () => {
    const a = account({ throttle: { RunInstances: 2, DescribeInstances: 2 } });
    const provider = ec2(ssmOptions(a));
    const machine = await provider.provision({ runId: "r-throttle" });
    await provider.release(machine);
    a.ssm.restore();
    const tokens = a.fake.inputsOf<{ ClientToken: string }>("RunInstances").map((i) => i.ClientToken);
    expect(tokens).toEqual(["r-throttle-1-1", "r-throttle-1-1", "r-throttle-1-1"]);
    expect(a.fake.instances.size).toBe(1);
  });

  it("an instance that never reaches running is terminated, and the error says so", async () => {
    const a = account({ stuckPending: true });
    const err = await caught(ec2(ssmOptions(a, { runningTimeoutMs: 200 })).provision({ runId: "r-stuck" }));
    a.ssm.restore();
    expect(err.code).toBe("PROVISION_TIMEOUT");
    expect(err.message).toMatch(/did not reach running.*terminated/);
    expect(a.fake.calls()).toContain("TerminateInstances");
    expect(a.fake.securityGroups.size).toBe(0);
  });

  it("an SSM agent that never comes online is MACHINE_NOT_READY, and the instance is terminated", async () => {
    const a = account();
    a.ssm.agent = "unregistered";
    const err = await caught(ec2(ssmOptions(a, { readyTimeoutMs: 300 })).provision({ runId: "r-offline" }));
    a.ssm.restore();
    expect(err.code).toBe("MACHINE_NOT_READY");
    expect(a.fake.instances.get(INSTANCE)?.state).toMatch(/shutting-down|terminated/);
    expect(listRecordedResources().filter((r) => r.runId === "r-offline")).toEqual([]);
  });

  it("SSH access: an imported key pair, port 22 from the caller only, and the host key pinned through user data", async () => {
    const a = account({ stuckPending: true }); // never running: this test is about what was asked for
    await caught(ec2({ region: REGION, instanceType: "t3.micro", access: { kind: "ssh", allowSshFrom: "198.51.100.7/32" }, clients: { ec2: a.fake.ec2, ssm: a.ssm.client }, pollMs: 5, runningTimeoutMs: 50 }).provision({ runId: "r-ssh" }));
    a.ssm.restore();
    const [imported] = a.fake.inputsOf<{ KeyName: string; PublicKeyMaterial: Uint8Array; TagSpecifications: { ResourceType: string }[] }>("ImportKeyPair");
    expect(imported!.KeyName).toBe("runctl-r-ssh");
    expect(Buffer.from(imported!.PublicKeyMaterial).toString()).toMatch(/^ssh-ed25519 /);
    expect(imported!.TagSpecifications[0]!.ResourceType).toBe("key-pair");
    const [ingress] = a.fake.inputsOf<{ IpPermissions: { FromPort: number; IpRanges: { CidrIp: string }[] }[] }>("AuthorizeSecurityGroupIngress");
    expect(ingress!.IpPermissions).toEqual([expect.objectContaining({ FromPort: 22, ToPort: 22, IpRanges: [expect.objectContaining({ CidrIp: "198.51.100.7/32" })] })]);
    const [run] = a.fake.inputsOf<{ UserData: string; KeyName: string }>("RunInstances");
    expect(run!.KeyName).toBe("runctl-r-ssh");
    expect(hostKeyOfUserData(run!.UserData)?.publicKey).toMatch(/^ssh-ed25519 /);
    // Cleaned up after the failure: key pair deleted too.
    expect(a.fake.keyPairs.size).toBe(0);
  });
});

describe("ec2(): a multi-node gang", () => {
  it("one placement, one shared security group that lets the nodes reach each other, released together", async () => {
    const second = INSTANCE.replace("0123", "0999");
    const ssm = fakeSsm({ instanceId: INSTANCE, moreInstanceIds: [second], env: { AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER", AWS_DEFAULT_REGION: "us-east-1" } });
    ssm.mock.on(GetParameterCommand).callsFake((input: { Name: string }) => ({ Parameter: { Name: input.Name, Type: "String", Value: "ami-0f0e0d0c0b0a09080" } }));
    const a = { fake: fakeEc2({ instanceIds: [INSTANCE, second] }), ssm };
    const provider = ec2(ssmOptions(a));
    const machines = await Promise.all([0, 1].map((rank) => provider.provision({ runId: "r-gang", gang: { rank, size: 2 } })));
    try {
      expect(machines.map((m) => m.id).sort()).toEqual([INSTANCE, second].sort());
      const groups = a.fake.inputsOf<{ GroupName: string }>("CreateSecurityGroup");
      expect(groups.map((g) => g.GroupName)).toEqual(["runctl-r-gang"]);
      const [between] = a.fake.inputsOf<{ GroupId: string; IpPermissions: { IpProtocol: string; UserIdGroupPairs?: { GroupId: string }[] }[] }>("AuthorizeSecurityGroupIngress");
      expect(between!.IpPermissions).toEqual([expect.objectContaining({ IpProtocol: "-1", UserIdGroupPairs: [expect.objectContaining({ GroupId: between!.GroupId })] })]);
      const runs = a.fake.inputsOf<{ SecurityGroupIds: string[]; ClientToken: string; Placement?: { AvailabilityZone?: string } }>("RunInstances");
      expect(runs.map((r) => r.SecurityGroupIds)).toEqual([[between!.GroupId], [between!.GroupId]]);
      expect(new Set(runs.map((r) => r.ClientToken)).size).toBe(2); // two launches, not one idempotent instance
      // Node 1 was launched where node 0 landed.
      expect(runs[0]!.Placement).toBeUndefined(); // node 0: wherever capacity is
      expect(runs[1]!.Placement?.AvailabilityZone).toBe(a.fake.instances.get(machines[0]!.id)?.zone);
    } finally {
      await Promise.all(machines.map((m) => provider.release(m)));
      ssm.restore();
    }
    expect(a.fake.securityGroups.size).toBe(0);
    for (const id of [INSTANCE, second]) expect(a.fake.instances.get(id)?.state).toMatch(/shutting-down|terminated/);
  });

  it("each node imports its own key pair; a gang whose node 0 fails launches no other node and leaves nothing", async () => {
    const a = account({ stuckPending: true }); // never running: this test is about what is created and undone
    const provider = ec2({ region: REGION, instanceType: "t3.micro", access: { kind: "ssh", allowSshFrom: "198.51.100.7/32" }, clients: { ec2: a.fake.ec2, ssm: a.ssm.client }, pollMs: 5, runningTimeoutMs: 50 });
    const errors = await Promise.all([0, 1].map((rank) => caught(provider.provision({ runId: "r-gang2", gang: { rank, size: 2 } }))));
    a.ssm.restore();
    expect(errors.map((e) => e.code)).toEqual(["PROVISION_TIMEOUT", "PROVISION_TIMEOUT"]);
    expect(a.fake.inputsOf<{ KeyName: string }>("ImportKeyPair").map((k) => k.KeyName).sort()).toEqual(["runctl-r-gang2-node0", "runctl-r-gang2-node1"]);
    expect(a.fake.inputsOf("CreateSecurityGroup")).toHaveLength(1);
    expect(a.fake.inputsOf("RunInstances")).toHaveLength(1);
    expect(a.fake.keyPairs.size).toBe(0);
    expect(a.fake.securityGroups.size).toBe(0);
  });
});

describe("ec2(): cloud truth, plan and price", () => {
  it("describe tells a reclaimed spot instance (interrupted) from a terminated one", async () => {
    const a = account();
    const provider = ec2(ssmOptions(a, { spot: true }));
    const machine: Machine = await provider.provision({ runId: "r-describe" });
    expect(await provider.describe!(machine)).toBe("running");
    a.fake.reclaim(machine.id);
    expect(await provider.describe!(machine)).toBe("interrupted");
    await provider.release(machine);
    a.ssm.restore();
  });

  it(".plan() lists what would be created, with tags and the catalog price; nothing is called", async () => {
    const a = account();
    const plan = Runctl.instance(ec2(ssmOptions(a, { instanceType: "g5.xlarge", hourlyPriceUsd: undefined }))).budget({ maxDurationMs: 2 * 3600_000, maxUsd: 1 });
    const summary = await plan.plan();
    a.ssm.restore();
    expect(summary.resources.map((r) => r.kind)).toEqual(["instance", "volume", "security-group"]);
    expect(summary.resources[0]!.tags["runctl:run-id"]).toBe("<run-id>");
    expect(summary.estimate).toMatchObject({ hourlyUsd: 1.006, maxTotalUsd: 2.012, budgetUsd: 1, withinBudget: false });
    expect(mutating(a.fake.calls())).toEqual([]);
  });

  it("a run whose estimate exceeds its budget is refused before anything is created", async () => {
    const a = account();
    const run = Runctl.instance(ec2(ssmOptions(a, { instanceType: "g5.xlarge" })))
      .checkpoints({ storage: staging })
      .budget({ maxUsd: 5, maxDurationMs: 10 * 3600_000 })
      .train("train.py");
    const err = await caught(Promise.resolve(run));
    a.ssm.restore();
    expect(err.code).toBe("BUDGET_EXCEEDED");
    expect(err.message).toMatch(/\$10\.06.*more than its budget of \$5; nothing was created/);
    expect(mutating(a.fake.calls())).toEqual([]);
  });

  it("checkpoints without storage are refused on EC2: they would die with the instance", () => {
    const a = account();
    const err = thrown(() => Runctl.instance(ec2(ssmOptions(a))).checkpoints({ keep: 2 }).train("train.py"));
    a.ssm.restore();
    expect(err.code).toBe("INVALID_ARGUMENT");
    expect(err.message).toMatch(/storage/);
  });

  it("uses an existing instance by id and does not terminate what it did not create", async () => {
    const a = account();
    const created = await ec2(ssmOptions(a)).provision({ runId: "r-pre" }); // stands in for one made elsewhere
    const provider = ec2({ region: REGION, instanceId: created.id, access: { kind: "ssm", staging, user: null }, clients: { ec2: a.fake.ec2, ssm: a.ssm.client }, pollMs: 5 });
    const machine = await provider.provision({ runId: "r-attach" });
    expect(machine.id).toBe(created.id);
    await provider.release(machine);
    expect(a.fake.instances.get(created.id)?.state).toBe("running");
    a.ssm.restore();
  });
});

describe("ec2(): issue 10 (cloud resources)", () => {
  const tagsOf = (spec: { Tags: { Key: string; Value: string }[] }): Record<string, string> => Object.fromEntries(spec.Tags.map((t) => [t.Key, t.Value]));
  const instanceTags = (a: { fake: FakeEc2 }): Record<string, string> =>
    tagsOf(a.fake.inputsOf<{ TagSpecifications: { ResourceType: string; Tags: { Key: string; Value: string }[] }[] }>("RunInstances")[0]!.TagSpecifications.find((t) => t.ResourceType === "instance")!);
  const lifetime = (tags: Record<string, string>): number => Date.parse(tags["runctl:expires-at"]!) - Date.parse(tags["runctl:created-at"]!);

  it("item 8: expiry follows the run's time budget plus 2 h (a day without one), and keepAlive renews it on what the run made", async () => {
    const budgeted = account();
    const provider = ec2(ssmOptions(budgeted));
    const machine = await provider.provision({ runId: "r-budget", maxDurationMs: 30 * 3600_000 });
    try {
      expect(lifetime(instanceTags(budgeted))).toBe(32 * 3600_000);
      // Renewal: the instance, its root volume and its security group get a new expires-at, a full lifetime from now.
      expect(provider.keepAliveEveryMs).toBe(600_000);
      const before = Date.now();
      await provider.keepAlive!(machine);
      const [renewal] = budgeted.fake.inputsOf<{ Resources: string[]; Tags: { Key: string; Value: string }[] }>("CreateTags");
      const [group] = [...budgeted.fake.securityGroups.keys()];
      expect(renewal!.Resources.sort()).toEqual([INSTANCE, `vol-${INSTANCE.slice(2)}`, group!].sort());
      expect(renewal!.Tags).toHaveLength(1);
      const renewed = Date.parse(renewal!.Tags[0]!.Value);
      expect(renewal!.Tags[0]!.Key).toBe("runctl:expires-at");
      expect(renewed).toBeGreaterThanOrEqual(before + 32 * 3600_000);
      expect(renewed).toBeLessThanOrEqual(Date.now() + 32 * 3600_000);
      // The cloud now says so too.
      expect(budgeted.fake.securityGroups.get(group!)!.tags.find((t) => t.Key === "runctl:expires-at")?.Value).toBe(renewal!.Tags[0]!.Value);
    } finally {
      await provider.release(machine);
      budgeted.ssm.restore();
    }

    const unbudgeted = account();
    const plain = ec2(ssmOptions(unbudgeted));
    const other = await plain.provision({ runId: "r-nobudget" });
    await plain.release(other);
    unbudgeted.ssm.restore();
    expect(lifetime(instanceTags(unbudgeted))).toBe(24 * 3600_000);
  });

  it("item 8: an existing instance (ec2({ instanceId })) carries no runctl expiry: keepAlive tags nothing", async () => {
    const a = account();
    const created = await ec2(ssmOptions(a)).provision({ runId: "r-pre2" });
    const provider = ec2({ region: REGION, instanceId: created.id, access: { kind: "ssm", staging, user: null }, clients: { ec2: a.fake.ec2, ssm: a.ssm.client }, pollMs: 5 });
    const machine = await provider.provision({ runId: "r-existing" });
    await provider.keepAlive!(machine);
    expect(a.fake.calls()).not.toContain("CreateTags");
    await provider.release(machine);
    a.ssm.restore();
  });

  it("item 10: the user data powers the instance off unless the agent cancels it, and the machine tells the agent how", async () => {
    const a = account();
    const provider = ec2(ssmOptions(a, { readyTimeoutMs: 300_000 }));
    const machine = await provider.provision({ runId: "r-poweroff" });
    await provider.release(machine);
    a.ssm.restore();
    const input = a.fake.inputsOf<{ UserData: string; InstanceInitiatedShutdownBehavior: string }>("RunInstances")[0]!;
    expect(input.InstanceInitiatedShutdownBehavior).toBe("terminate"); // the power-off ends billing
    const text = Buffer.from(input.UserData, "base64").toString("utf8");
    // The first runcmd (once per instance), under the lock the agent's cancel takes; 5 min ready timeout + 30 min margin.
    expect(text).toMatch(/^runcmd:\n {2}- \[sh, -c, "exec 9>\/run\/runctl-poweroff\.lock; flock 9; \[ -e \/run\/runctl-poweroff\.canceled \] \|\| shutdown -h \+35"\]$/m);
    expect(powerOffMinutesOfUserData(input.UserData)).toBe(35);
    expect(machine.shutdown?.cancelBootPowerOff).toEqual(["sudo", "-n", "sh", "-c", expect.stringMatching(/flock 9; touch \/run\/runctl-poweroff\.canceled; shutdown -c/)]);
  });

  it("item 10: the power-off and its cancel, run for real in either order (fake shutdown and sudo, the lock and marker in a temp folder)", () => {
    const script = /runcmd:\n {2}- \[sh, -c, "(.*)"\]$/m.exec(Buffer.from(buildUserData({ powerOffAfterMin: 40 }), "base64").toString("utf8"))![1]!;
    for (const order of [["poweroff", "cancel"], ["cancel", "poweroff"]] as const) {
      const dir = tempDir("poweroff");
      const bin = join(dir, "bin");
      mkdirSync(bin);
      const calls = join(dir, "calls");
      // A scheduled power-off is a file, as systemd keeps it; shutdown -c fails when none is scheduled.
      writeFileSync(join(bin, "shutdown"), `#!/bin/sh\necho "$*" >> '${calls}'\nif [ "$1" = -c ]; then [ -e '${dir}/scheduled' ] && rm '${dir}/scheduled'; else touch '${dir}/scheduled'; fi\n`, { mode: 0o755 });
      writeFileSync(join(bin, "sudo"), `#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n`, { mode: 0o755 });
      const local = (text: string): string => text.replaceAll("/run/runctl-poweroff", join(dir, "runctl-poweroff")).replaceAll("/run/systemd/shutdown/scheduled", join(dir, "scheduled"));
      const env = { ...process.env, PATH: `${bin}:${process.env["PATH"] ?? ""}` };
      for (const step of order) {
        if (step === "poweroff") execFileSync("sh", ["-c", local(script)], { env });
        else execFileSync(BOOT_POWER_OFF_CANCEL[0]!, BOOT_POWER_OFF_CANCEL.slice(1).map(local), { env });
      }
      // Either way nothing stays scheduled; the cancel succeeded; a power-off after the cancel is never scheduled.
      expect(existsSync(join(dir, "scheduled")), order.join(" then ")).toBe(false);
      expect(readFileSync(calls, "utf8")).toBe(order[0] === "poweroff" ? "-h +40\n-c\n" : "-c\n");
    }
  });

  it("item 10: unstartedPowerOffMs sets the minutes; 0, or an instance kept after the run, has no power-off and no cancel", async () => {
    const cases: [Record<string, unknown>, number | undefined][] = [
      [{ unstartedPowerOffMs: 90_001 }, 2],
      [{ unstartedPowerOffMs: 0 }, undefined],
      [{ terminateOnRelease: false }, undefined],
    ];
    for (const [extra, minutes] of cases) {
      const a = account();
      const provider = ec2(ssmOptions(a, extra));
      const machine = await provider.provision({ runId: "r-poweroff-opts" });
      await provider.release(machine);
      a.ssm.restore();
      expect(powerOffMinutesOfUserData(a.fake.inputsOf<{ UserData: string }>("RunInstances")[0]!.UserData)).toBe(minutes);
      expect(machine.shutdown?.cancelBootPowerOff).toEqual(minutes === undefined ? undefined : expect.any(Array));
    }
  });

  it("item 11: an unreadable or unusable private key fails before anything is created", async () => {
    const dir = tempDir("key");
    const notAKey = join(dir, "not-a-key.pem");
    writeFileSync(notAKey, "-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n-----END OPENSSH PRIVATE KEY-----\n", { mode: 0o600 });
    const cases: [string, string][] = [
      [join(dir, "missing.pem"), "INVALID_ARGUMENT"],
      [dir, "INVALID_ARGUMENT"], // a folder
      [notAKey, "AUTH_FAILED"],
    ];
    for (const [privateKeyPath, code] of cases) {
      const a = account();
      const err = await caught(
        ec2({ region: REGION, instanceType: "t3.micro", access: { kind: "ssh", keyPairName: "mine", privateKeyPath, allowSshFrom: "198.51.100.7/32" }, clients: { ec2: a.fake.ec2, ssm: a.ssm.client }, pollMs: 5 }).provision({ runId: "r-badkey" }),
      );
      a.ssm.restore();
      expect(err.code, privateKeyPath).toBe(code);
      expect(err.message).toMatch(/nothing was created/);
      expect(a.fake.calls()).toEqual([]); // not even a read: the key is checked first
    }
    // The same for an existing instance: it is not even looked up.
    const a = account();
    const err = await caught(ec2({ region: REGION, instanceId: INSTANCE, access: { kind: "ssh", keyPairName: "mine", privateKeyPath: join(dir, "missing.pem") }, clients: { ec2: a.fake.ec2, ssm: a.ssm.client } }).provision({ runId: "r-badkey2" }));
    a.ssm.restore();
    expect(err.code).toBe("INVALID_ARGUMENT");
    expect(a.fake.calls()).toEqual([]);
  });

  it("item 13: an existing instance that does not answer is left running, and the error says so", async () => {
    const a = account();
    const created = await ec2(ssmOptions(a)).provision({ runId: "r-pre3" });
    a.ssm.agent = "unregistered";
    const err = await caught(ec2({ region: REGION, instanceId: created.id, access: { kind: "ssm", staging, user: null }, clients: { ec2: a.fake.ec2, ssm: a.ssm.client }, pollMs: 5, readyTimeoutMs: 300 }).provision({ runId: "r-existing2" }));
    a.ssm.restore();
    expect(err.code).toBe("MACHINE_NOT_READY");
    expect(err.message).toMatch(/it was left running: runctl did not launch it/);
    expect(err.message).not.toMatch(/terminated/);
    expect(a.fake.instances.get(created.id)?.state).toBe("running");
  });
});
