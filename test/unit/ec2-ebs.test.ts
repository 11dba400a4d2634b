/**
 * Unit tests of runctl's EBS API against a mocked EC2Client (aws-sdk-client-mock): validation before
 * any call, tags at creation, waits with real lowercase states, AZ checks, delete protection,
 * snapshot/restore, throttling, and the resource ledger. Nothing leaves this process.
 */
import { execFileSync } from "node:child_process";
import {
  AttachVolumeCommand,
  CreateSnapshotCommand,
  CreateVolumeCommand,
  DeleteSnapshotCommand,
  DeleteVolumeCommand,
  DescribeInstancesCommand,
  DescribeSnapshotsCommand,
  DescribeVolumesCommand,
  DetachVolumeCommand,
  EC2Client,
  EC2ServiceException,
  type Volume,
} from "@aws-sdk/client-ec2";
import { mockClient } from "aws-sdk-client-mock";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { listRecordedResources, resourceLedgerPath } from "../../src/ledger/resource-ledger.js";
import { ebsVolumes, mountVolumeScript, prewarmVolumeScript, validateAvailabilityZone, type CreateEbsVolumeOptions, type EbsVolumes } from "../../src/providers/ec2/ebs/index.js";
import { TAG, fromAwsTags } from "../../src/providers/ec2/tags.js";
import { caught } from "../support/caught.js";
import { useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("ec2-ebs");

const REGION = "us-east-1";
const OWNER = "alice@laptop";
const VOL = "vol-0123456789abcdef0";
const INSTANCE = "i-0123456789abcdef0";
const SNAP = "snap-0123456789abcdef0";
const FAST = { retry: { retries: 3, minDelayMs: 1, maxDelayMs: 2 }, poll: { initialMs: 1, maxMs: 5 } };

function awsError(name: string, message: string, status = 400): EC2ServiceException {
  return new EC2ServiceException({ name, $fault: status >= 500 ? "server" : "client", $metadata: { httpStatusCode: status, requestId: "req-1" }, message });
}

let mock: ReturnType<typeof mockClient>;
let volumes: EbsVolumes;
let warnings: string[];

beforeEach(() => {
  const client = new EC2Client({ region: REGION, credentials: { accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "x" } });
  mock = mockClient(client);
  warnings = [];
  volumes = ebsVolumes({ region: REGION, client, owner: OWNER, onWarning: (m) => warnings.push(m), ...FAST });
});
afterEach(() => mock.restore());

function volume(overrides: Partial<Volume> = {}): Volume {
  return {
    VolumeId: VOL,
    Size: 100,
    VolumeType: "gp3",
    Iops: 3000,
    Throughput: 125,
    Encrypted: false,
    AvailabilityZone: "us-east-1a",
    State: "available",
    CreateTime: new Date("2026-11-21T10:00:00Z"),
    Attachments: [],
    Tags: [
      { Key: TAG.runId, Value: "run-1" },
      { Key: TAG.owner, Value: OWNER },
      { Key: TAG.name, Value: "data" },
    ],
    ...overrides,
  };
}

const base: CreateEbsVolumeOptions = { sizeGb: 100, availabilityZone: "us-east-1a" };

describe("create: validation before any call", () => {
  it.each<[string, Record<string, unknown>, RegExp]>([
    ["no zone", { availabilityZone: undefined }, /availabilityZone is required/],
    ["the rust default <region>-1a", { availabilityZone: "us-east-1-1a" }, /not a zone of region us-east-1/],
    ["a zone of another region", { availabilityZone: "eu-west-1a" }, /not a zone of region us-east-1/],
    ["unknown type", { type: "standard" }, /type must be one of/],
    ["iops on gp2", { type: "gp2", iops: 3000 }, /iops can only be set for gp3, io1 and io2/],
    ["iops on st1", { type: "st1", sizeGb: 500, iops: 500 }, /iops can only be set/],
    ["throughput on io1", { type: "io1", iops: 1000, throughputMiBps: 250 }, /throughputMiBps can only be set for gp3/],
    ["throughput on sc1", { type: "sc1", sizeGb: 500, throughputMiBps: 250 }, /throughputMiBps can only be set for gp3/],
    ["gp3 iops below baseline", { iops: 2999 }, /iops must be a whole number from 3,000 to 80,000/],
    ["gp3 iops over the 500/GiB ratio", { sizeGb: 10, iops: 6000 }, /at most 500 per GiB/],
    ["gp3 throughput below 125", { throughputMiBps: 100 }, /from 125 to 2,000/],
    ["gp3 throughput above 2000", { throughputMiBps: 2001, iops: 10000 }, /from 125 to 2,000/],
    ["gp3 throughput over 0.25 MiB/s per IOPS", { throughputMiBps: 1000 }, /needs at least 4000 IOPS/],
    ["io1 without iops", { type: "io1" }, /iops is required for io1/],
    ["io2 without iops", { type: "io2" }, /iops is required for io2/],
    ["io1 over 50 IOPS/GiB", { type: "io1", sizeGb: 10, iops: 1000 }, /at most 50 per GiB/],
    ["io2 above 256,000", { type: "io2", sizeGb: 1000, iops: 300000 }, /100 to 256,000/],
    ["size 0", { sizeGb: 0 }, /sizeGb must be a whole number from 1 to 65,536/],
    ["fractional size", { sizeGb: 10.5 }, /sizeGb must be a whole number/],
    ["st1 below 125 GiB", { type: "st1", sizeGb: 100 }, /from 125 to 16,384/],
    ["gp2 above 16 TiB", { type: "gp2", sizeGb: 20000 }, /from 1 to 16,384/],
    ["io1 below 4 GiB", { type: "io1", sizeGb: 2, iops: 100 }, /from 4 to 16,384/],
    ["no size and no snapshot", { sizeGb: undefined }, /sizeGb is required/],
    ["kms key without encryption", { kmsKeyId: "alias/ml" }, /kmsKeyId needs encrypted: true/],
    ["persistent with a ttl", { persistent: true, ttlMs: 1000 }, /persistent volume has no ttlMs/],
    ["negative ttl", { ttlMs: -5 }, /ttlMs must be a positive number/],
    ["bad snapshot id", { snapshotId: "snap-xyz" }, /snapshotId must look like/],
    ["over-long name", { name: "x".repeat(300) }, /name must be a string of 1 to 255/],
    ["a reserved aws: tag", { tags: { "aws:cloudformation": "x" } }, /not starting with "aws:"/],
  ])("%s", async (_label, patch, message) => {
    const err = await caught(volumes.create({ ...base, ...patch } as CreateEbsVolumeOptions));
    expect(err.code).toBe("INVALID_ARGUMENT");
    expect(err.message).toMatch(message);
    expect(mock.calls()).toHaveLength(0);
  });

  it("accepts the edges of every range", async () => {
    mock.on(CreateVolumeCommand).callsFake((input: { Size?: number }) => ({ ...volume({ State: "creating", Size: input.Size ?? 0 }) }));
    await volumes.create({ ...base, sizeGb: 1 });
    await volumes.create({ ...base, sizeGb: 160, iops: 80000, throughputMiBps: 2000 });
    await volumes.create({ ...base, type: "io2", sizeGb: 4, iops: 4000 });
    await volumes.create({ ...base, type: "sc1", sizeGb: 125 });
    await volumes.create({ ...base, availabilityZone: "us-east-1-bos-1a" });
    expect(mock.commandCalls(CreateVolumeCommand)).toHaveLength(5);
    expect(validateAvailabilityZone("us-west-2-lax-1a", "us-west-2")).toBe("us-west-2-lax-1a");
  });

  it("refuses bad ids and options of the other calls without calling AWS", async () => {
    expect((await caught(volumes.attach("vol-1", INSTANCE))).code).toBe("INVALID_ARGUMENT");
    expect((await caught(volumes.attach(VOL, "i-zz"))).code).toBe("INVALID_ARGUMENT");
    expect((await caught(volumes.attach(VOL, INSTANCE, { device: "/dev/nvme1n1" }))).code).toBe("INVALID_ARGUMENT");
    expect((await caught(volumes.waitFor(VOL, "attached" as never))).code).toBe("INVALID_ARGUMENT");
    expect((await caught(volumes.delete("volume-1"))).code).toBe("INVALID_ARGUMENT");
    expect((await caught(volumes.restore(SNAP, { availabilityZone: "us-west-2a" }))).code).toBe("INVALID_ARGUMENT");
    expect((await caught(volumes.snapshot(VOL, { persistent: true, ttlMs: 5 }))).code).toBe("INVALID_ARGUMENT");
    expect(() => ebsVolumes({ region: "us-east-1a" })).toThrowError(expect.objectContaining({ code: "INVALID_ARGUMENT" }) as Error);
    expect(mock.calls()).toHaveLength(0);
  });
});

describe("create: tags at creation and the ledger", () => {
  it("tags a run volume with every runctl tag in TagSpecifications and records it", async () => {
    mock.on(CreateVolumeCommand).resolves(volume({ State: "creating", Tags: [] }));
    const before = Date.now();
    const v = await volumes.create({ ...base, type: "gp3", iops: 6000, throughputMiBps: 500, encrypted: true, kmsKeyId: "alias/ml", runId: "run-42", ttlMs: 3_600_000, tags: { team: "vision" } });
    const input = mock.commandCalls(CreateVolumeCommand)[0]!.args[0].input;
    expect(input).toMatchObject({ AvailabilityZone: "us-east-1a", Size: 100, VolumeType: "gp3", Iops: 6000, Throughput: 500, Encrypted: true, KmsKeyId: "alias/ml" });
    expect(input.ClientToken).toMatch(/^[0-9a-f-]{36}$/);
    expect(input.TagSpecifications).toHaveLength(1);
    expect(input.TagSpecifications![0]!.ResourceType).toBe("volume");
    const tags = fromAwsTags(input.TagSpecifications![0]!.Tags);
    expect(tags).toMatchObject({ [TAG.runId]: "run-42", [TAG.owner]: OWNER, [TAG.name]: "runctl-run-42", team: "vision" });
    expect(tags[TAG.persistent]).toBeUndefined();
    const created = Date.parse(tags[TAG.createdAt]!);
    expect(created).toBeGreaterThanOrEqual(before - 1000);
    expect(Date.parse(tags[TAG.expiresAt]!) - created).toBe(3_600_000);
    // The answer had no tags; the volume reports the ones set atomically with it.
    expect(v.runId).toBe("run-42");
    expect(v.state).toBe("creating");

    const rec = listRecordedResources().find((r) => r.id === VOL && r.kind === "volume");
    expect(rec).toMatchObject({ provider: "ec2", region: REGION, runId: "run-42", expiresAt: tags[TAG.expiresAt] });
  });

  it("a persistent volume carries runctl:persistent=true and no expiry", async () => {
    mock.on(CreateVolumeCommand).resolves(volume({ State: "creating" }));
    await volumes.create({ ...base, persistent: true, name: "imagenet" });
    const tags = fromAwsTags(mock.commandCalls(CreateVolumeCommand)[0]!.args[0].input.TagSpecifications![0]!.Tags);
    expect(tags[TAG.persistent]).toBe("true");
    expect(tags[TAG.expiresAt]).toBeUndefined();
    expect(tags[TAG.name]).toBe("imagenet");
    expect(tags[TAG.runId]).toBe("volume:imagenet");
  });

  it("repeats a throttled CreateVolume with the same ClientToken (never two volumes)", async () => {
    mock
      .on(CreateVolumeCommand)
      .rejectsOnce(awsError("RequestLimitExceeded", "Request limit exceeded."))
      .rejectsOnce(awsError("RequestLimitExceeded", "Request limit exceeded."))
      .resolves(volume({ State: "creating" }));
    const v = await volumes.create(base);
    expect(v.volumeId).toBe(VOL);
    const calls = mock.commandCalls(CreateVolumeCommand);
    expect(calls).toHaveLength(3);
    expect(new Set(calls.map((c) => c.args[0].input.ClientToken)).size).toBe(1);
    expect(listRecordedResources().filter((r) => r.id === VOL).length).toBeGreaterThan(0);
  });

  it("gives up on throttling after its retries with a retryable CLOUD_ERROR", async () => {
    mock.on(CreateVolumeCommand).rejects(awsError("RequestLimitExceeded", "Request limit exceeded."));
    const err = await caught(volumes.create(base));
    expect(err).toMatchObject({ code: "CLOUD_ERROR", retryable: true });
    expect(err.details["awsCode"]).toBe("RequestLimitExceeded");
    expect(mock.commandCalls(CreateVolumeCommand)).toHaveLength(4);
  });

  it("does not repeat a client error", async () => {
    mock.on(CreateVolumeCommand).rejects(awsError("InvalidParameterCombination", "bad combination"));
    const err = await caught(volumes.create(base));
    expect(err).toMatchObject({ code: "CLOUD_ERROR", retryable: false });
    expect(mock.commandCalls(CreateVolumeCommand)).toHaveLength(1);
  });
});

describe("waitFor", () => {
  it("waits from creating to available, comparing EC2's lowercase state", async () => {
    mock
      .on(DescribeVolumesCommand)
      .resolvesOnce({ Volumes: [volume({ State: "creating" })] })
      .resolvesOnce({ Volumes: [volume({ State: "creating" })] })
      .resolves({ Volumes: [volume({ State: "available" })] });
    const v = await volumes.waitFor(VOL, "available", { timeoutMs: 5_000 });
    expect(v.state).toBe("available");
    expect(mock.commandCalls(DescribeVolumesCommand)).toHaveLength(3);
  });

  it("rides out the id being unknown right after creation", async () => {
    mock
      .on(DescribeVolumesCommand)
      .rejectsOnce(awsError("InvalidVolume.NotFound", `The volume '${VOL}' does not exist.`))
      .resolves({ Volumes: [volume()] });
    expect((await volumes.waitFor(VOL, "available")).state).toBe("available");
  });

  it("times out with PROVISION_TIMEOUT, saying what it last saw", async () => {
    mock.on(DescribeVolumesCommand).resolves({ Volumes: [volume({ State: "creating" })] });
    const err = await caught(volumes.waitFor(VOL, "available", { timeoutMs: 50 }));
    expect(err.code).toBe("PROVISION_TIMEOUT");
    expect(err.message).toMatch(/last seen: creating/);
  });

  it("fails at once on the error state", async () => {
    mock.on(DescribeVolumesCommand).resolves({ Volumes: [volume({ State: "error" })] });
    expect((await caught(volumes.waitFor(VOL, "available", { timeoutMs: 5_000 }))).code).toBe("CLOUD_ERROR");
  });

  it("in-use means attached, not merely attaching", async () => {
    mock
      .on(DescribeVolumesCommand)
      .resolvesOnce({ Volumes: [volume({ State: "in-use", Attachments: [{ InstanceId: INSTANCE, State: "attaching", Device: "/dev/sdf" }] })] })
      .resolves({ Volumes: [volume({ State: "in-use", Attachments: [{ InstanceId: INSTANCE, State: "attached", Device: "/dev/sdf" }] })] });
    const v = await volumes.waitFor(VOL, "in-use", { timeoutMs: 5_000 });
    expect(v.attachments[0]).toMatchObject({ instanceId: INSTANCE, state: "attached" });
    expect(mock.commandCalls(DescribeVolumesCommand)).toHaveLength(2);
  });

  it("stops at once when aborted", async () => {
    mock.on(DescribeVolumesCommand).resolves({ Volumes: [volume({ State: "creating" })] });
    const controller = new AbortController();
    const p = volumes.waitFor(VOL, "available", { timeoutMs: 60_000, signal: controller.signal });
    setTimeout(() => controller.abort(), 20);
    expect((await caught(p)).code).toBe("ABORTED");
  });
});

describe("attach and detach", () => {
  const instanceIn = (az: string) => ({ Reservations: [{ Instances: [{ InstanceId: INSTANCE, Placement: { AvailabilityZone: az } }] }] });

  it("refuses a volume in another zone before AttachVolume", async () => {
    mock.on(DescribeVolumesCommand).resolves({ Volumes: [volume({ AvailabilityZone: "us-east-1a" })] });
    mock.on(DescribeInstancesCommand).resolves(instanceIn("us-east-1b"));
    const err = await caught(volumes.attach(VOL, INSTANCE));
    expect(err.code).toBe("INVALID_ARGUMENT");
    expect(err.message).toMatch(/us-east-1a but instance .* is in us-east-1b/);
    expect(mock.commandCalls(AttachVolumeCommand)).toHaveLength(0);
  });

  it("attaches at /dev/sdf by default and waits for attached", async () => {
    mock
      .on(DescribeVolumesCommand)
      .resolvesOnce({ Volumes: [volume()] })
      .resolvesOnce({ Volumes: [volume({ State: "in-use", Attachments: [{ InstanceId: INSTANCE, State: "attaching", Device: "/dev/sdf" }] })] })
      .resolves({ Volumes: [volume({ State: "in-use", Attachments: [{ InstanceId: INSTANCE, State: "attached", Device: "/dev/sdf" }] })] });
    mock.on(DescribeInstancesCommand).resolves(instanceIn("us-east-1a"));
    mock.on(AttachVolumeCommand).resolves({ VolumeId: VOL, InstanceId: INSTANCE, Device: "/dev/sdf", State: "attaching" });
    const r = await volumes.attach(VOL, INSTANCE);
    expect(r).toEqual({ volumeId: VOL, instanceId: INSTANCE, device: "/dev/sdf", state: "attached", alreadyAttached: false });
    expect(mock.commandCalls(AttachVolumeCommand)[0]!.args[0].input).toEqual({ VolumeId: VOL, InstanceId: INSTANCE, Device: "/dev/sdf" });
  });

  it("refuses a volume attached to another instance (RESOURCE_IN_USE)", async () => {
    mock.on(DescribeVolumesCommand).resolves({ Volumes: [volume({ State: "in-use", Attachments: [{ InstanceId: "i-0fedcba9876543210", State: "attached", Device: "/dev/sdf" }] })] });
    mock.on(DescribeInstancesCommand).resolves(instanceIn("us-east-1a"));
    const err = await caught(volumes.attach(VOL, INSTANCE));
    expect(err.code).toBe("RESOURCE_IN_USE");
    expect(mock.commandCalls(AttachVolumeCommand)).toHaveLength(0);
  });

  it("maps EC2's VolumeInUse race to RESOURCE_IN_USE", async () => {
    mock.on(DescribeVolumesCommand).resolves({ Volumes: [volume()] });
    mock.on(DescribeInstancesCommand).resolves(instanceIn("us-east-1a"));
    mock.on(AttachVolumeCommand).rejects(awsError("VolumeInUse", `${VOL} is already attached to an instance`));
    expect((await caught(volumes.attach(VOL, INSTANCE))).code).toBe("RESOURCE_IN_USE");
  });

  it("NOT_FOUND for an unknown instance", async () => {
    mock.on(DescribeVolumesCommand).resolves({ Volumes: [volume()] });
    mock.on(DescribeInstancesCommand).rejects(awsError("InvalidInstanceID.NotFound", `The instance ID '${INSTANCE}' does not exist`));
    expect((await caught(volumes.attach(VOL, INSTANCE))).code).toBe("NOT_FOUND");
  });

  it("detaches and waits for available; a detached volume is a no-op", async () => {
    mock
      .on(DescribeVolumesCommand)
      .resolvesOnce({ Volumes: [volume({ State: "in-use", Attachments: [{ InstanceId: INSTANCE, State: "attached", Device: "/dev/sdf" }] })] })
      .resolvesOnce({ Volumes: [volume({ State: "in-use", Attachments: [{ InstanceId: INSTANCE, State: "detaching", Device: "/dev/sdf" }] })] })
      .resolves({ Volumes: [volume()] });
    mock.on(DetachVolumeCommand).resolves({ State: "detaching" });
    expect(await volumes.detach(VOL)).toEqual({ volumeId: VOL, instanceId: INSTANCE, state: "available", detached: true });
    expect(mock.commandCalls(DetachVolumeCommand)[0]!.args[0].input).toEqual({ VolumeId: VOL, InstanceId: INSTANCE });
    expect(await volumes.detach(VOL)).toEqual({ volumeId: VOL, state: "available", detached: false });
    expect(mock.commandCalls(DetachVolumeCommand)).toHaveLength(1);
  });
});

describe("delete", () => {
  const persistentTags = [
    { Key: TAG.runId, Value: "volume:imagenet" },
    { Key: TAG.owner, Value: OWNER },
    { Key: TAG.persistent, Value: "true" },
  ];

  it("refuses a persistent volume without force", async () => {
    mock.on(DescribeVolumesCommand).resolves({ Volumes: [volume({ Tags: persistentTags })] });
    const err = await caught(volumes.delete(VOL));
    expect(err.code).toBe("RESOURCE_IN_USE");
    expect(err.message).toMatch(/persistent/);
    expect(mock.commandCalls(DeleteVolumeCommand)).toHaveLength(0);
  });

  it("refuses an attached volume without force", async () => {
    mock.on(DescribeVolumesCommand).resolves({ Volumes: [volume({ State: "in-use", Attachments: [{ InstanceId: INSTANCE, State: "attached" }] })] });
    const err = await caught(volumes.delete(VOL));
    expect(err.code).toBe("RESOURCE_IN_USE");
    expect(err.message).toMatch(/attached to i-0123456789abcdef0/);
    expect(mock.commandCalls(DeleteVolumeCommand)).toHaveLength(0);
    expect(mock.commandCalls(DetachVolumeCommand)).toHaveLength(0);
  });

  it("force deletes a persistent volume and records the deletion", async () => {
    mock.on(DescribeVolumesCommand).resolves({ Volumes: [volume({ VolumeId: "vol-0aaaaaaaaaaaaaaaa", Tags: persistentTags })] });
    mock.on(DeleteVolumeCommand).resolves({});
    expect(await volumes.delete("vol-0aaaaaaaaaaaaaaaa", { force: true })).toEqual({ id: "vol-0aaaaaaaaaaaaaaaa", deleted: true, detached: false });
    const lines = readFileSync(resourceLedgerPath(), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { op: string; id?: string });
    expect(lines.some((l) => l.op === "deleted" && l.id === "vol-0aaaaaaaaaaaaaaaa")).toBe(true);
  });

  it("force on an attached volume detaches it (forced) first", async () => {
    mock
      .on(DescribeVolumesCommand)
      .resolvesOnce({ Volumes: [volume({ State: "in-use", Attachments: [{ InstanceId: INSTANCE, State: "attached" }] })] })
      .resolvesOnce({ Volumes: [volume({ State: "in-use", Attachments: [{ InstanceId: INSTANCE, State: "attached" }] })] })
      .resolves({ Volumes: [volume()] });
    mock.on(DetachVolumeCommand).resolves({});
    mock.on(DeleteVolumeCommand).resolves({});
    expect(await volumes.delete(VOL, { force: true })).toEqual({ id: VOL, deleted: true, detached: true });
    expect(mock.commandCalls(DetachVolumeCommand)[0]!.args[0].input).toMatchObject({ VolumeId: VOL, Force: true });
    expect(warnings.some((w) => w.includes("force-detaching"))).toBe(true);
  });

  it("a volume that is already gone is not an error", async () => {
    mock.on(DescribeVolumesCommand).rejects(awsError("InvalidVolume.NotFound", `The volume '${VOL}' does not exist.`));
    expect(await volumes.delete(VOL)).toEqual({ id: VOL, deleted: false, detached: false });
    expect(mock.commandCalls(DeleteVolumeCommand)).toHaveLength(0);
  });

  it("create then delete leaves the ledger saying deleted", async () => {
    const id = "vol-0bbbbbbbbbbbbbbbb";
    mock.on(CreateVolumeCommand).resolves(volume({ VolumeId: id, State: "creating" }));
    mock.on(DescribeVolumesCommand).resolves({ Volumes: [volume({ VolumeId: id })] });
    mock.on(DeleteVolumeCommand).resolves({});
    await volumes.create(base);
    expect(listRecordedResources().some((r) => r.id === id)).toBe(true);
    await volumes.delete(id);
    expect(listRecordedResources().some((r) => r.id === id)).toBe(false);
    expect(listRecordedResources({ includeDeleted: true }).find((r) => r.id === id)?.deletedAt).toBeDefined();
  });
});

describe("snapshot and restore", () => {
  it("snapshots with tags at creation, inheriting the volume's run", async () => {
    mock.on(DescribeVolumesCommand).resolves({ Volumes: [volume()] });
    mock.on(CreateSnapshotCommand).resolves({ SnapshotId: SNAP, VolumeId: VOL, State: "pending", VolumeSize: 100, Encrypted: false });
    const s = await volumes.snapshot(VOL, { description: "mnist cache", persistent: true });
    const input = mock.commandCalls(CreateSnapshotCommand)[0]!.args[0].input;
    expect(input.Description).toBe("mnist cache");
    expect(input.TagSpecifications![0]!.ResourceType).toBe("snapshot");
    const tags = fromAwsTags(input.TagSpecifications![0]!.Tags);
    expect(tags).toMatchObject({ [TAG.runId]: "run-1", [TAG.owner]: OWNER, [TAG.persistent]: "true", [TAG.name]: "data" });
    expect(tags[TAG.expiresAt]).toBeUndefined();
    expect(s).toMatchObject({ snapshotId: SNAP, state: "pending", persistent: true, runId: "run-1" });
    expect(listRecordedResources().find((r) => r.id === SNAP)).toMatchObject({ kind: "snapshot", persistent: true });
  });

  it("waits for a snapshot to complete", async () => {
    mock
      .on(DescribeSnapshotsCommand)
      .resolvesOnce({ Snapshots: [{ SnapshotId: SNAP, State: "pending", Progress: "40%" }] })
      .resolves({ Snapshots: [{ SnapshotId: SNAP, State: "completed", Progress: "100%" }] });
    expect((await volumes.waitForSnapshot(SNAP, { timeoutMs: 5_000 })).state).toBe("completed");
  });

  it("restores into a tagged volume of at least the snapshot's size", async () => {
    mock.on(DescribeSnapshotsCommand).resolves({ Snapshots: [{ SnapshotId: SNAP, State: "completed", VolumeSize: 50 }] });
    mock.on(CreateVolumeCommand).resolves(volume({ State: "creating", SnapshotId: SNAP, Size: 50 }));
    const small = await caught(volumes.restore(SNAP, { availabilityZone: "us-east-1b", sizeGb: 20 }));
    expect(small.code).toBe("INVALID_ARGUMENT");
    expect(mock.commandCalls(CreateVolumeCommand)).toHaveLength(0);

    const v = await volumes.restore(SNAP, { availabilityZone: "us-east-1b", runId: "run-7" });
    const input = mock.commandCalls(CreateVolumeCommand)[0]!.args[0].input;
    expect(input).toMatchObject({ SnapshotId: SNAP, AvailabilityZone: "us-east-1b", Size: 50, VolumeType: "gp3" });
    expect(fromAwsTags(input.TagSpecifications![0]!.Tags)).toMatchObject({ [TAG.runId]: "run-7", [TAG.owner]: OWNER });
    expect(v.snapshotId).toBe(SNAP);
  });

  it("restoring as st1 checks the type's minimum against the snapshot's size", async () => {
    mock.on(DescribeSnapshotsCommand).resolves({ Snapshots: [{ SnapshotId: SNAP, State: "completed", VolumeSize: 50 }] });
    const err = await caught(volumes.restore(SNAP, { availabilityZone: "us-east-1b", type: "st1" }));
    expect(err.message).toMatch(/from 125 to 16,384/);
    expect(mock.commandCalls(CreateVolumeCommand)).toHaveLength(0);
  });

  it("NOT_FOUND for an unknown snapshot; persistent snapshots need force to delete", async () => {
    mock.on(DescribeSnapshotsCommand).rejectsOnce(awsError("InvalidSnapshot.NotFound", `The snapshot '${SNAP}' does not exist.`));
    expect((await caught(volumes.restore(SNAP, { availabilityZone: "us-east-1b" }))).code).toBe("NOT_FOUND");
    mock.on(DescribeSnapshotsCommand).resolves({ Snapshots: [{ SnapshotId: SNAP, State: "completed", Tags: [{ Key: TAG.runId, Value: "r" }, { Key: TAG.persistent, Value: "true" }] }] });
    mock.on(DeleteSnapshotCommand).resolves({});
    expect((await caught(volumes.deleteSnapshot(SNAP))).code).toBe("RESOURCE_IN_USE");
    expect(await volumes.deleteSnapshot(SNAP, { force: true })).toEqual({ id: SNAP, deleted: true, detached: false });
  });
});

describe("list", () => {
  it("reads every page with the tag-key filter and double-checks the tag", async () => {
    mock
      .on(DescribeVolumesCommand)
      .resolvesOnce({ Volumes: [volume({ VolumeId: "vol-0000000000000000a" }), volume({ VolumeId: "vol-0000000000000000b", Tags: [{ Key: "Name", Value: "not ours" }] })], NextToken: "page-2" })
      .resolvesOnce({ Volumes: [volume({ VolumeId: "vol-0000000000000000c", Tags: [{ Key: TAG.runId, Value: "r2" }, { Key: TAG.owner, Value: "bob@box" }] })] });
    const all = await volumes.list();
    expect(all.map((v) => v.volumeId)).toEqual(["vol-0000000000000000a", "vol-0000000000000000c"]);
    const calls = mock.commandCalls(DescribeVolumesCommand);
    expect(calls[0]!.args[0].input.Filters).toEqual([{ Name: "tag-key", Values: [TAG.runId] }]);
    expect(calls[1]!.args[0].input.NextToken).toBe("page-2");
  });
});

describe("machine-side scripts", () => {
  it("are valid POSIX sh with every value quoted", () => {
    const mount = mountVolumeScript({ volumeId: VOL, mountPoint: "/mnt/my data's", fsType: "xfs", device: "/dev/sdg", owner: "ubuntu" });
    expect(mount).toContain(`MP='/mnt/my data'\\''s'`);
    expect(mount).toContain("VOL=vol0123456789abcdef0");
    expect(mount).toContain("XEN_A=/dev/xvdg");
    const prewarm = prewarmVolumeScript({ source: "s3://ml-data/mnist", mountPoint: "/mnt/data", endpoint: "http://127.0.0.1:9000", to: "mnist" });
    for (const script of [mount, prewarm]) execFileSync("sh", ["-n", "-c", script]);
  });

  it("refuse bad inputs before running anything", () => {
    expect(() => mountVolumeScript({ volumeId: VOL, mountPoint: "relative" })).toThrowError(/absolute path/);
    expect(() => mountVolumeScript({ volumeId: VOL, mountPoint: "/mnt/../etc" })).toThrowError(/absolute path/);
    expect(() => mountVolumeScript({ volumeId: VOL, mountPoint: "/" })).toThrowError(/cannot be "\/"/);
    expect(() => mountVolumeScript({ volumeId: VOL, mountPoint: "/mnt/d", fsType: "btrfs" as never })).toThrowError(/fsType/);
    expect(() => mountVolumeScript({ volumeId: VOL, mountPoint: "/mnt/d", owner: "x; rm -rf /" })).toThrowError(/owner/);
    expect(() => prewarmVolumeScript({ source: "http://x/y", mountPoint: "/mnt/d" })).toThrowError(/s3:\/\//);
    expect(() => prewarmVolumeScript({ source: "s3://b-ok/p", mountPoint: "/mnt/d", to: "../x" })).toThrowError(/relative folder/);
  });
});
