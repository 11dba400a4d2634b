/**
 * The leak sweeper against a mocked EC2 account (aws-sdk-client-mock, AWS's response shapes and
 * error codes, several pages per Describe call) and real staging prefixes in s3rver: untagged
 * resources are never named by any call, other owners are left alone unless owner "all", expired,
 * run-ended and grace-period resources are judged by the rules, a security group rides out
 * DependencyViolation, a dry run makes no mutating call, and the ledger records every deletion.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  DeleteKeyPairCommand,
  DeleteSecurityGroupCommand,
  DeleteVolumeCommand,
  DescribeInstancesCommand,
  DescribeKeyPairsCommand,
  DescribeSecurityGroupsCommand,
  DescribeSnapshotsCommand,
  DescribeVolumesCommand,
  DeleteSnapshotCommand,
  EC2Client,
  EC2ServiceException,
  TerminateInstancesCommand,
  type DescribeInstancesCommandInput,
  type DescribeSecurityGroupsCommandInput,
  type DescribeVolumesCommandInput,
  type Instance,
  type Volume,
} from "@aws-sdk/client-ec2";
import { mockClient } from "aws-sdk-client-mock";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Runctl } from "runctl";
import { ec2 } from "runctl/aws";
import type { SweepReport } from "../../src/providers/sweep-types.js";
import { resourceLedgerPath } from "../../src/ledger/resource-ledger.js";
import { sweepEc2, type SweepEc2Options } from "../../src/providers/ec2/sweep.js";
import { runEndedFromJournal } from "../../src/providers/ec2/sweep-rules.js";
import { TAG, defaultOwner } from "../../src/providers/ec2/tags.js";
import { s3, type S3Storage } from "../../src/storage/s3/index.js";
import { caught } from "../support/caught.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../support/s3-server.js";
import { useTempRunctlHome } from "../support/temp-home.js";

const home = useTempRunctlHome("ec2-sweep");
const ME = defaultOwner();
const BOB = "bob@other-box";
const NOW = new Date("2026-11-21T12:00:00.000Z");
const ago = (ms: number): string => new Date(NOW.getTime() - ms).toISOString();
const later = (ms: number): string => new Date(NOW.getTime() + ms).toISOString();
const H = 3_600_000;
const MIN = 60_000;
const FAST: Pick<SweepEc2Options, "retry" | "timing"> = {
  retry: { retries: 2, minDelayMs: 1, maxDelayMs: 2 },
  timing: { instanceWaitMs: 2_000, volumeWaitMs: 2_000, dependencyRetries: 3, poll: { initialMs: 1, maxMs: 5 } },
};
const BUCKET = "runctl-sweep-test";

/** runctl's tags as EC2 returns them. */
function tags(t: { runId: string; owner: string; createdAt?: string; expiresAt?: string; persistent?: boolean; name?: string }): { Key: string; Value: string }[] {
  return [
    { Key: TAG.name, Value: t.name ?? `runctl-${t.runId}` },
    { Key: TAG.runId, Value: t.runId },
    { Key: TAG.owner, Value: t.owner },
    { Key: TAG.createdAt, Value: t.createdAt ?? ago(2 * H) },
    ...(t.expiresAt ? [{ Key: TAG.expiresAt, Value: t.expiresAt }] : []),
    ...(t.persistent ? [{ Key: TAG.persistent, Value: "true" }] : []),
  ];
}

const UNTAGGED = new Set(["i-0000000000000000f", "vol-0000000000000000f", "sg-0000000000000000f", "my-own-key", "key-0000000000000000f"]);

function instance(id: string, state: string, t?: Parameters<typeof tags>[0]): Instance {
  return { InstanceId: id, State: { Name: state as never, Code: 16 }, LaunchTime: new Date(ago(3 * H)), Placement: { AvailabilityZone: "us-east-1a" }, ...(t ? { Tags: tags(t) } : { Tags: [{ Key: "Name", Value: "someone's box" }] }) };
}

function vol(id: string, t: Parameters<typeof tags>[0] | undefined, extra: Partial<Volume> = {}): Volume {
  return { VolumeId: id, State: "available", Size: 10, VolumeType: "gp3", AvailabilityZone: "us-east-1a", CreateTime: new Date(ago(3 * H)), Attachments: [], ...(t ? { Tags: tags(t) } : {}), ...extra };
}

function awsError(name: string, message: string, status = 400): EC2ServiceException {
  return new EC2ServiceException({ name, $fault: status >= 500 ? "server" : "client", $metadata: { httpStatusCode: status, requestId: "req" }, message });
}

/**
 * A mixed account. Instances (2 pages): untagged; mine expired and stopped; mine with a finished
 * run; mine live; Bob's expired. Volumes (2 pages): untagged; attached to the finished run's
 * instance; in grace; old with no instance; persistent (and expired); the live run's; Bob's;
 * expired but attached to the live instance. Groups (2 pages), key pairs (one answer, no paging).
 */
function fakeAccount(mock: ReturnType<typeof mockClient>, options: { readonly sgStuck?: boolean } = {}): void {
  const instancesPage1 = [
    instance("i-0000000000000000f", "running"),
    instance("i-0aaaaaaaaaaaaaaa1", "stopped", { runId: "run-expired", owner: ME, expiresAt: ago(MIN) }),
    instance("i-0aaaaaaaaaaaaaaa2", "running", { runId: "run-ended", owner: ME, expiresAt: later(H) }),
  ];
  const instancesPage2 = [
    instance("i-0aaaaaaaaaaaaaaa3", "running", { runId: "run-live", owner: ME, expiresAt: later(H) }),
    instance("i-0bbbbbbbbbbbbbbb1", "running", { runId: "run-bob", owner: BOB, expiresAt: ago(H) }),
  ];
  mock.on(DescribeInstancesCommand).callsFake((input: DescribeInstancesCommandInput) => {
    if (input.InstanceIds) {
      return { Reservations: [{ Instances: input.InstanceIds.map((id) => instance(id, "shutting-down", { runId: "x", owner: ME })) }] };
    }
    if (input.NextToken === "inst-2") return { Reservations: [{ Instances: instancesPage2 }] };
    return { Reservations: [{ Instances: instancesPage1.slice(0, 1) }, { Instances: instancesPage1.slice(1) }], NextToken: "inst-2" };
  });

  let endedVolumeLooks = 0;
  const volumesPage1 = [
    vol("vol-0000000000000000f", undefined),
    vol("vol-0aaaaaaaaaaaaaaa1", { runId: "run-ended", owner: ME }, { State: "in-use", Attachments: [{ InstanceId: "i-0aaaaaaaaaaaaaaa2", State: "attached", VolumeId: "vol-0aaaaaaaaaaaaaaa1" }] }),
    vol("vol-0aaaaaaaaaaaaaaa2", { runId: "run-new", owner: ME, createdAt: ago(5 * MIN), expiresAt: later(H) }),
    vol("vol-0aaaaaaaaaaaaaaa3", { runId: "run-gone", owner: ME, createdAt: ago(H), expiresAt: later(H) }),
  ];
  const volumesPage2 = [
    vol("vol-0aaaaaaaaaaaaaaa4", { runId: "volume:imagenet", owner: ME, createdAt: ago(100 * H), expiresAt: ago(H), persistent: true }),
    vol("vol-0aaaaaaaaaaaaaaa5", { runId: "run-live", owner: ME, createdAt: ago(H) }),
    vol("vol-0bbbbbbbbbbbbbbb1", { runId: "run-bob", owner: BOB, expiresAt: ago(H) }),
    vol("vol-0aaaaaaaaaaaaaaa6", { runId: "run-other", owner: ME, expiresAt: ago(H) }, { State: "in-use", Attachments: [{ InstanceId: "i-0aaaaaaaaaaaaaaa3", State: "attached" }] }),
  ];
  mock.on(DescribeVolumesCommand).callsFake((input: DescribeVolumesCommandInput) => {
    if (input.VolumeIds) {
      // The finished run's volume is still attached at the first look, then free.
      endedVolumeLooks++;
      return {
        Volumes: input.VolumeIds.map((id) =>
          endedVolumeLooks === 1
            ? vol(id, { runId: "run-ended", owner: ME }, { State: "in-use", Attachments: [{ InstanceId: "i-0aaaaaaaaaaaaaaa2", State: "detaching" }] })
            : vol(id, { runId: "run-ended", owner: ME }),
        ),
      };
    }
    if (input.NextToken === "vol-2") return { Volumes: volumesPage2 };
    return { Volumes: volumesPage1, NextToken: "vol-2" };
  });
  mock.on(DeleteVolumeCommand).resolves({});
  mock.on(TerminateInstancesCommand).callsFake((input: { InstanceIds: string[] }) => ({
    TerminatingInstances: input.InstanceIds.map((id) => ({ InstanceId: id, CurrentState: { Name: "shutting-down", Code: 32 }, PreviousState: { Name: "running", Code: 16 } })),
  }));

  mock.on(DescribeSecurityGroupsCommand).callsFake((input: DescribeSecurityGroupsCommandInput) => {
    if (input.NextToken === "sg-2") {
      return { SecurityGroups: [{ GroupId: "sg-0aaaaaaaaaaaaaaa2", GroupName: "runctl-run-expired", Tags: tags({ runId: "run-expired", owner: ME, expiresAt: ago(MIN) }) }] };
    }
    return {
      SecurityGroups: [
        { GroupId: "sg-0000000000000000f", GroupName: "default" },
        { GroupId: "sg-0aaaaaaaaaaaaaaa1", GroupName: "runctl-run-ended", Tags: tags({ runId: "run-ended", owner: ME }) },
      ],
      NextToken: "sg-2",
    };
  });
  let endedGroupTries = 0;
  mock.on(DeleteSecurityGroupCommand).callsFake((input: { GroupId: string }) => {
    if (input.GroupId === "sg-0aaaaaaaaaaaaaaa1" && ++endedGroupTries <= 2) throw awsError("DependencyViolation", `resource ${input.GroupId} has a dependent object`);
    if (input.GroupId === "sg-0aaaaaaaaaaaaaaa2" && options.sgStuck !== false) throw awsError("DependencyViolation", `resource ${input.GroupId} has a dependent object`);
    return {};
  });

  mock.on(DescribeKeyPairsCommand).resolves({
    KeyPairs: [
      { KeyName: "my-own-key", KeyPairId: "key-0000000000000000f", KeyType: "ed25519" },
      { KeyName: "runctl-run-ended", KeyPairId: "key-0aaaaaaaaaaaaaaa1", KeyType: "ed25519", Tags: tags({ runId: "run-ended", owner: ME }) },
      { KeyName: "runctl-run-bob", KeyPairId: "key-0bbbbbbbbbbbbbbb1", KeyType: "ed25519", Tags: tags({ runId: "run-bob", owner: BOB }) },
    ],
  });
  mock.on(DeleteKeyPairCommand).resolves({});
  mock.on(DescribeSnapshotsCommand).resolves({ Snapshots: [] });
  mock.on(DeleteSnapshotCommand).resolves({});
}

const MUTATING = new Set(["TerminateInstancesCommand", "DeleteVolumeCommand", "DeleteSnapshotCommand", "DeleteSecurityGroupCommand", "DeleteKeyPairCommand"]);

/** Every mutating call, as [command name, ids it names]. */
function mutatingCalls(mock: ReturnType<typeof mockClient>): [string, string[]][] {
  return mock
    .calls()
    .map((c) => c.args[0] as { constructor: { name: string }; input: Record<string, unknown> })
    .filter((cmd) => MUTATING.has(cmd.constructor.name))
    .map((cmd) => {
      const i = cmd.input;
      const ids = [...((i["InstanceIds"] as string[] | undefined) ?? []), i["VolumeId"], i["SnapshotId"], i["GroupId"], i["KeyName"], i["KeyPairId"]].filter((x): x is string => typeof x === "string");
      return [cmd.constructor.name, ids];
    });
}

const ids = (list: readonly { id: string }[]): string[] => list.map((r) => r.id).sort();
const keptReason = (report: SweepReport, id: string): string | undefined => report.kept.find((k) => k.resource.id === id)?.reason;

let server: TestS3Server;
let staging: S3Storage;
const mocks: ReturnType<typeof mockClient>[] = [];

function mocked(): { client: EC2Client; mock: ReturnType<typeof mockClient> } {
  const client = new EC2Client({ region: "us-east-1", credentials: { accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "x" } });
  const mock = mockClient(client);
  mocks.push(mock);
  return { client, mock };
}

async function putStaging(): Promise<void> {
  const marker = (m: Record<string, string>): string => JSON.stringify(m);
  await staging.put("runctl-staging/old-scope/_runctl.json", marker({ "runctl:run-id": "run-x", "runctl:owner": ME, "runctl:created-at": ago(30 * H), "runctl:expires-at": ago(6 * H) }));
  await staging.put("runctl-staging/old-scope/a1b2.stdin", "input");
  await staging.put("runctl-staging/old-scope/output/cmd-1/i-0aaaaaaaaaaaaaaa1/awsrunShellScript/0.awsrunShellScript/stdout", "out");
  await staging.put("runctl-staging/fresh-scope/_runctl.json", marker({ "runctl:run-id": "run-fresh", "runctl:owner": ME, "runctl:created-at": ago(MIN), "runctl:expires-at": later(H) }));
  await staging.put("runctl-staging/fresh-scope/f.tar", "tar");
  await staging.put("runctl-staging/no-marker/x.bin", "not judged without a marker");
  await staging.put("runctl-staging/bobs-scope/_runctl.json", marker({ "runctl:run-id": "run-bob", "runctl:owner": BOB, "runctl:created-at": ago(30 * H), "runctl:expires-at": ago(6 * H) }));
  await staging.put("checkpoints/run-x/LATEST", "not staging");
}

async function stagingKeys(): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of staging.list("")) keys.push(o.key);
  return keys.sort();
}

beforeAll(async () => {
  server = await startS3Server({ buckets: [BUCKET] });
  staging = s3(`s3://${BUCKET}/team`, { endpoint: server.endpoint, ...S3RVER_CLIENT_SETTINGS, credentials: TEST_AWS_CREDENTIALS });
});
afterAll(async () => {
  await server?.stop();
});
afterEach(async () => {
  for (const m of mocks.splice(0)) m.restore();
  const all = await stagingKeys();
  if (all.length > 0) await staging.delete(all);
});

const runEnded = (runId: string): boolean | undefined => (runId === "run-ended" ? true : undefined);

describe("sweepEc2 over a mixed account", () => {
  it("sweeps only what the rules say, in order, and never names an untagged resource", async () => {
    const { client, mock } = mocked();
    fakeAccount(mock);
    await putStaging();
    const report = await sweepEc2({ region: "us-east-1", client, now: NOW, runEnded, staging: [staging], ...FAST });

    // Every page was read, with the tag-key filter.
    const describeInputs = mock.commandCalls(DescribeInstancesCommand).map((c) => c.args[0].input).filter((i) => !i.InstanceIds);
    expect(describeInputs.map((i) => i.NextToken)).toEqual([undefined, "inst-2"]);
    for (const cmd of [DescribeInstancesCommand, DescribeVolumesCommand, DescribeSecurityGroupsCommand, DescribeKeyPairsCommand] as const) {
      const first = mock.commandCalls(cmd as typeof DescribeVolumesCommand)[0]!.args[0].input;
      expect(first.Filters).toContainEqual({ Name: "tag-key", Values: [TAG.runId] });
    }
    expect(mock.commandCalls(DescribeVolumesCommand).map((c) => c.args[0].input.NextToken).slice(0, 2)).toEqual([undefined, "vol-2"]);
    expect(mock.commandCalls(DescribeSecurityGroupsCommand).map((c) => c.args[0].input.NextToken)).toEqual([undefined, "sg-2"]);

    // Untagged resources: in no call, and nowhere in the report.
    const calls = mutatingCalls(mock);
    for (const [, named] of calls) for (const id of named) expect(UNTAGGED.has(id), id).toBe(false);
    const everything = [...report.found, ...report.deleted, ...report.kept.map((k) => k.resource), ...report.errors.map((e) => e.resource)];
    for (const r of everything) expect(UNTAGGED.has(r.id), r.id).toBe(false);

    expect(report.dryRun).toBe(false);
    expect(report.errors).toEqual([]);
    expect(ids(report.deleted)).toEqual(
      [
        "i-0aaaaaaaaaaaaaaa1", // expired (stopped instances too)
        "i-0aaaaaaaaaaaaaaa2", // run over
        "vol-0aaaaaaaaaaaaaaa1", // run over; attached to a swept instance, deleted once free
        "vol-0aaaaaaaaaaaaaaa3", // no live instance, past the grace period
        "sg-0aaaaaaaaaaaaaaa1", // run over; DependencyViolation twice, then gone
        "runctl-run-ended",
        `${staging.uri}/runctl-staging/old-scope/`,
      ].sort(),
    );
    expect(ids(report.found)).toEqual([...ids(report.deleted), "sg-0aaaaaaaaaaaaaaa2"].sort());

    expect(keptReason(report, "i-0aaaaaaaaaaaaaaa3")).toMatch(/not known to be over/);
    expect(keptReason(report, "i-0bbbbbbbbbbbbbbb1")).toMatch(/owned by bob@other-box/);
    expect(keptReason(report, "vol-0aaaaaaaaaaaaaaa2")).toMatch(/grace period until 2026-11-21T12:10:00.000Z/);
    expect(keptReason(report, "vol-0aaaaaaaaaaaaaaa4")).toBe("persistent");
    expect(keptReason(report, "vol-0aaaaaaaaaaaaaaa5")).toMatch(/instance i-0aaaaaaaaaaaaaaa3 of run run-live is still there/);
    expect(keptReason(report, "vol-0aaaaaaaaaaaaaaa6")).toBe("attached to i-0aaaaaaaaaaaaaaa3");
    expect(keptReason(report, "vol-0bbbbbbbbbbbbbbb1")).toMatch(/owned by/);
    expect(keptReason(report, "sg-0aaaaaaaaaaaaaaa2")).toMatch(/^in use/);
    expect(keptReason(report, "runctl-run-bob")).toMatch(/owned by/);
    expect(keptReason(report, `${staging.uri}/runctl-staging/fresh-scope/`)).toMatch(/not over|grace|expires/);

    // Order: instances, then volumes, then groups, then key pairs.
    const order = calls.map(([name]) => name);
    const last = (n: string): number => order.lastIndexOf(n);
    const first = (n: string): number => order.indexOf(n);
    expect(last("TerminateInstancesCommand")).toBeLessThan(first("DeleteVolumeCommand"));
    expect(last("DeleteVolumeCommand")).toBeLessThan(first("DeleteSecurityGroupCommand"));
    expect(last("DeleteSecurityGroupCommand")).toBeLessThan(first("DeleteKeyPairCommand"));
    expect(mock.commandCalls(TerminateInstancesCommand).map((c) => c.args[0].input.InstanceIds)).toEqual([["i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2"]]);
    expect(mock.commandCalls(DeleteVolumeCommand).map((c) => c.args[0].input.VolumeId).sort()).toEqual(["vol-0aaaaaaaaaaaaaaa1", "vol-0aaaaaaaaaaaaaaa3"]);
    // The in-use group: its first try plus 3 repeats, then kept.
    expect(mock.commandCalls(DeleteSecurityGroupCommand).filter((c) => c.args[0].input.GroupId === "sg-0aaaaaaaaaaaaaaa2")).toHaveLength(4);
    expect(mock.commandCalls(DeleteSecurityGroupCommand).filter((c) => c.args[0].input.GroupId === "sg-0aaaaaaaaaaaaaaa1")).toHaveLength(3);
    expect(mock.commandCalls(DeleteKeyPairCommand).map((c) => c.args[0].input)).toEqual([{ KeyPairId: "key-0aaaaaaaaaaaaaaa1" }]);

    // Staging: the expired folder is gone with everything under it; the rest is untouched.
    expect(await stagingKeys()).toEqual(
      [
        "checkpoints/run-x/LATEST",
        "runctl-staging/bobs-scope/_runctl.json",
        "runctl-staging/fresh-scope/_runctl.json",
        "runctl-staging/fresh-scope/f.tar",
        "runctl-staging/no-marker/x.bin",
      ].sort(),
    );

    // The ledger says what was deleted.
    const ledger = readFileSync(resourceLedgerPath(), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { op: string; kind: string; id: string });
    const deletedInLedger = ledger.filter((l) => l.op === "deleted").map((l) => `${l.kind}:${l.id}`);
    for (const r of report.deleted) expect(deletedInLedger).toContain(`${r.kind}:${r.id}`);
  });

  it("a dry run makes no mutating call and reports the same", async () => {
    const real = mocked();
    fakeAccount(real.mock);
    await putStaging();
    const dry = mocked();
    fakeAccount(dry.mock);
    const dryReport = await sweepEc2({ region: "us-east-1", client: dry.client, now: NOW, runEnded, staging: [staging], dryRun: true, ...FAST });
    expect(mutatingCalls(dry.mock)).toEqual([]);
    expect(dryReport.dryRun).toBe(true);
    expect(dryReport.deleted).toEqual([]);
    expect((await stagingKeys()).filter((k) => k.startsWith("runctl-staging/old-scope/"))).toHaveLength(3);

    const realReport = await sweepEc2({ region: "us-east-1", client: real.client, now: NOW, runEnded, staging: [staging], ...FAST });
    expect(ids(dryReport.found)).toEqual(ids(realReport.found));
    // What the dry run keeps, the real run keeps too (the real one adds only what failed at delete time).
    for (const k of dryReport.kept) expect(keptReason(realReport, k.resource.id)).toBe(k.reason);
  });

  it('owner "all" widens the sweep to other owners', async () => {
    const { client, mock } = mocked();
    fakeAccount(mock, { sgStuck: false });
    await putStaging();
    // Bob's expired instance still runs and his run is not known to be over here: only force takes it.
    const report = await sweepEc2({ region: "us-east-1", client, now: NOW, runEnded, staging: [staging], owner: "all", force: true, ...FAST });
    const deleted = ids(report.deleted);
    expect(deleted).toContain("i-0bbbbbbbbbbbbbbb1");
    expect(deleted).toContain("vol-0bbbbbbbbbbbbbbb1");
    expect(deleted).toContain("runctl-run-bob");
    expect(deleted).toContain(`${staging.uri}/runctl-staging/bobs-scope/`);
    expect(deleted).toContain("sg-0aaaaaaaaaaaaaaa2");
    // Still never untagged, persistent, or protected by a live instance.
    for (const [, named] of mutatingCalls(mock)) for (const id of named) expect(UNTAGGED.has(id)).toBe(false);
    expect(deleted).not.toContain("vol-0aaaaaaaaaaaaaaa4");
    expect(deleted).not.toContain("vol-0aaaaaaaaaaaaaaa5");
    expect(deleted).not.toContain("i-0aaaaaaaaaaaaaaa3");
  });

  it("another owner's name scopes to that owner only", async () => {
    const { client, mock } = mocked();
    fakeAccount(mock);
    const report = await sweepEc2({ region: "us-east-1", client, now: NOW, runEnded, owner: BOB, force: true, ...FAST });
    expect(ids(report.deleted)).toEqual(["i-0bbbbbbbbbbbbbbb1", "runctl-run-bob", "vol-0bbbbbbbbbbbbbbb1"]);
  });

  it("never deletes anything when a Describe call fails (no partial picture)", async () => {
    const { client, mock } = mocked();
    fakeAccount(mock);
    mock.on(DescribeSecurityGroupsCommand).rejects(awsError("UnauthorizedOperation", "You are not authorized to perform this operation."));
    const err = await caught(sweepEc2({ region: "us-east-1", client, now: NOW, runEnded, ...FAST }));
    expect(err.code).toBe("CLOUD_ERROR");
    expect(err.message).toMatch(/DescribeSecurityGroups failed \(UnauthorizedOperation\)/);
    expect(mutatingCalls(mock)).toEqual([]);
  });

  it("rides out throttling on Describe and Delete calls", async () => {
    const { client, mock } = mocked();
    fakeAccount(mock);
    mock
      .on(DescribeKeyPairsCommand)
      .rejectsOnce(awsError("RequestLimitExceeded", "Request limit exceeded."))
      .resolves({ KeyPairs: [{ KeyName: "runctl-run-ended", KeyPairId: "key-0aaaaaaaaaaaaaaa1", Tags: tags({ runId: "run-ended", owner: ME }) }] });
    mock.on(DeleteKeyPairCommand).rejectsOnce(awsError("RequestLimitExceeded", "Request limit exceeded.")).resolves({});
    const report = await sweepEc2({ region: "us-east-1", client, now: NOW, runEnded, ...FAST });
    expect(ids(report.deleted)).toContain("runctl-run-ended");
    expect(mock.commandCalls(DeleteKeyPairCommand)).toHaveLength(2);
  });

  it("reports a failed deletion as an error and goes on", async () => {
    const { client, mock } = mocked();
    fakeAccount(mock, { sgStuck: false });
    mock.on(DeleteVolumeCommand, { VolumeId: "vol-0aaaaaaaaaaaaaaa3" }).rejects(awsError("UnauthorizedOperation", "not authorized"));
    const report = await sweepEc2({ region: "us-east-1", client, now: NOW, runEnded, ...FAST });
    expect(report.errors.map((e) => e.resource.id)).toEqual(["vol-0aaaaaaaaaaaaaaa3"]);
    expect(report.errors[0]!.message).toMatch(/UnauthorizedOperation/);
    expect(ids(report.deleted)).toContain("runctl-run-ended");
  });

  it("refuses bad options before any call", async () => {
    const { client, mock } = mocked();
    expect((await caught(sweepEc2({ region: "us-east-1a", client }))).code).toBe("INVALID_ARGUMENT");
    expect((await caught(sweepEc2({ region: "us-east-1", client, graceMs: -1 }))).code).toBe("INVALID_ARGUMENT");
    expect((await caught(sweepEc2({ region: "us-east-1", client, owner: "" }))).code).toBe("INVALID_ARGUMENT");
    expect(mock.calls()).toHaveLength(0);
  });
});

describe("runEndedFromJournal (the default runEnded)", () => {
  function journal(runId: string, lines: string[]): void {
    const dir = join(home, "runs", runId);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "journal.jsonl"), lines.join("\n") + (lines.length ? "\n" : ""));
  }
  const ev = (seq: number, e: Record<string, unknown>): string => JSON.stringify({ e: { seq, time: NOW.toISOString(), runId: "r", ...e } });

  it("is true once the journal ends with the run's exit event", () => {
    journal("20261121-100000-done01", [ev(1, { type: "phase", phase: "training" }), ev(2, { type: "phase", phase: "done" }), ev(3, { type: "exit", status: "failed", exitCode: 3, signal: null, durationMs: 5 })]);
    expect(runEndedFromJournal("20261121-100000-done01")).toBe(true);
  });

  it("is false while the run goes on, and ignores a torn last line", () => {
    journal("20261121-100000-live01", [ev(1, { type: "phase", phase: "training" }), ev(2, { type: "log", line: "step 1", offset: 7 }), '{"e":{"type":"ex']);
    expect(runEndedFromJournal("20261121-100000-live01")).toBe(false);
  });

  it("is undefined for runs this machine never journaled, and for ids that are not plain names", () => {
    expect(runEndedFromJournal("20261121-100000-nosuch")).toBeUndefined();
    expect(runEndedFromJournal("volume:imagenet")).toBeUndefined();
    expect(runEndedFromJournal("../../etc")).toBeUndefined();
    expect(runEndedFromJournal("a/b")).toBeUndefined();
  });

  it("drives the sweep when no runEnded is given", async () => {
    journal("run-journaled", [ev(1, { type: "phase", phase: "done" }), ev(2, { type: "exit", status: "succeeded", exitCode: 0, signal: null, durationMs: 5 })]);
    const { client, mock } = mocked();
    mock.on(DescribeInstancesCommand).callsFake((input: DescribeInstancesCommandInput) =>
      input.InstanceIds
        ? { Reservations: [] }
        : { Reservations: [{ Instances: [instance("i-0ccccccccccccccc1", "running", { runId: "run-journaled", owner: ME, expiresAt: later(H) }), instance("i-0ccccccccccccccc2", "running", { runId: "run-unknown", owner: ME, expiresAt: later(H) })] }] },
    );
    mock.on(DescribeVolumesCommand).resolves({ Volumes: [] });
    mock.on(DescribeSecurityGroupsCommand).resolves({ SecurityGroups: [] });
    mock.on(DescribeKeyPairsCommand).resolves({ KeyPairs: [] });
    mock.on(DescribeSnapshotsCommand).resolves({ Snapshots: [] });
    mock.on(TerminateInstancesCommand).resolves({});
    const report = await sweepEc2({ region: "us-east-1", client, now: NOW, ...FAST });
    expect(ids(report.deleted)).toEqual(["i-0ccccccccccccccc1"]);
    expect(keptReason(report, "i-0ccccccccccccccc2")).toMatch(/not known to be over/);
  });
});

/** An account holding exactly these resources (one page each). */
function account(mock: ReturnType<typeof mockClient>, r: { instances?: Instance[]; volumes?: Volume[]; groups?: { GroupId: string; GroupName: string; Tags?: { Key: string; Value: string }[] }[]; keys?: { KeyName: string; KeyPairId: string; Tags?: { Key: string; Value: string }[] }[]; snapshots?: Record<string, unknown>[] }): void {
  mock.on(DescribeInstancesCommand).callsFake((input: DescribeInstancesCommandInput) =>
    input.InstanceIds ? { Reservations: [{ Instances: input.InstanceIds.map((id) => ({ InstanceId: id, State: { Name: "shutting-down", Code: 32 } })) }] } : { Reservations: [{ Instances: r.instances ?? [] }] },
  );
  mock.on(DescribeVolumesCommand).resolves({ Volumes: r.volumes ?? [] });
  mock.on(DescribeSecurityGroupsCommand).resolves({ SecurityGroups: r.groups ?? [] });
  mock.on(DescribeKeyPairsCommand).resolves({ KeyPairs: r.keys ?? [] });
  mock.on(DescribeSnapshotsCommand).resolves({ Snapshots: (r.snapshots ?? []) as never });
  mock.on(TerminateInstancesCommand).resolves({});
  mock.on(DeleteVolumeCommand).resolves({});
  mock.on(DeleteSecurityGroupCommand).resolves({});
  mock.on(DeleteKeyPairCommand).resolves({});
  mock.on(DeleteSnapshotCommand).resolves({});
}

describe("a live run is never swept (issue 10, item 8)", () => {
  // A 30-hour run, still training: launched yesterday, its tags expired an hour ago (nobody renewed them).
  const RUN = "20261120-060000-live30";
  const liveRun = (mock: ReturnType<typeof mockClient>): void =>
    account(mock, {
      instances: [instance("i-0ddddddddddddddd1", "running", { runId: RUN, owner: ME, createdAt: ago(30 * H), expiresAt: ago(H) })],
      groups: [{ GroupId: "sg-0ddddddddddddddd1", GroupName: `runctl-${RUN}`, Tags: tags({ runId: RUN, owner: ME, createdAt: ago(30 * H), expiresAt: ago(H) }) }],
      keys: [{ KeyName: `runctl-${RUN}`, KeyPairId: "key-0ddddddddddddddd1", Tags: tags({ runId: RUN, owner: ME, createdAt: ago(30 * H), expiresAt: ago(H) }) }],
    });

  it("an expired instance that still runs a run not known to be over is kept, with its group and key pair", async () => {
    const { client, mock } = mocked();
    liveRun(mock);
    // The local journal says the run goes on (false), or this machine does not know it (undefined).
    for (const ended of [false, undefined]) {
      const report = await sweepEc2({ region: "us-east-1", client, now: NOW, runEnded: () => ended, ...FAST });
      expect(report.found).toEqual([]);
      expect(report.deleted).toEqual([]);
      expect(keptReason(report, "i-0ddddddddddddddd1")).toMatch(/expired at .* but run 20261120-060000-live30 looks alive .*pass force/);
      expect(keptReason(report, "sg-0ddddddddddddddd1")).toMatch(/looks alive/);
      expect(keptReason(report, `runctl-${RUN}`)).toMatch(/looks alive/);
    }
    expect(mutatingCalls(mock)).toEqual([]);
  });

  it("force sweeps the expired live run; a run known to be over goes without force", async () => {
    const forced = mocked();
    liveRun(forced.mock);
    const report = await sweepEc2({ region: "us-east-1", client: forced.client, now: NOW, runEnded: () => undefined, force: true, ...FAST });
    expect(ids(report.deleted)).toEqual([`runctl-${RUN}`, "i-0ddddddddddddddd1", "sg-0ddddddddddddddd1"].sort());
    expect(report.deleted.find((r) => r.id === "i-0ddddddddddddddd1")?.reason).toMatch(/swept with force/);

    const over = mocked();
    liveRun(over.mock);
    const overReport = await sweepEc2({ region: "us-east-1", client: over.client, now: NOW, runEnded: (id) => id === RUN, ...FAST });
    expect(ids(overReport.deleted)).toContain("i-0ddddddddddddddd1");
  });

  it("force never takes a live run that has not expired", async () => {
    const { client, mock } = mocked();
    account(mock, { instances: [instance("i-0ddddddddddddddd2", "running", { runId: RUN, owner: ME, createdAt: ago(30 * H), expiresAt: later(H) })] });
    const report = await sweepEc2({ region: "us-east-1", client, now: NOW, runEnded: () => undefined, force: true, ...FAST });
    expect(report.deleted).toEqual([]);
    expect(keptReason(report, "i-0ddddddddddddddd2")).toMatch(/not known to be over; expires at/);
  });
});

describe("only runctl's own tag set counts (issue 10, item 9)", () => {
  it('owner "all" ignores resources tagged by hand with runctl:run-id (or an incomplete or malformed set)', async () => {
    const { client, mock } = mocked();
    const hand = (extra: { Key: string; Value: string }[]) => [{ Key: TAG.runId, Value: "my-data" }, ...extra];
    account(mock, {
      volumes: [
        vol("vol-0eeeeeeeeeeeeeee1", undefined, { Tags: hand([]) }), // run-id only
        vol("vol-0eeeeeeeeeeeeeee2", undefined, { Tags: hand([{ Key: TAG.owner, Value: "me" }, { Key: TAG.expiresAt, Value: ago(H) }]) }), // no created-at
        vol("vol-0eeeeeeeeeeeeeee3", undefined, { Tags: hand([{ Key: TAG.owner, Value: "me" }, { Key: TAG.createdAt, Value: "2026-11-01" }]) }), // not runctl's time format
        vol("vol-0eeeeeeeeeeeeeee4", undefined, { Tags: [{ Key: TAG.runId, Value: "my data set!" }, { Key: TAG.owner, Value: "me" }, { Key: TAG.createdAt, Value: ago(30 * H) }] }), // not a run id
        vol("vol-0eeeeeeeeeeeeeee5", undefined, { Tags: hand([{ Key: TAG.owner, Value: "me" }, { Key: TAG.createdAt, Value: ago(30 * H) }, { Key: TAG.expiresAt, Value: "tomorrow" }]) }),
        vol("vol-0eeeeeeeeeeeeeee9", { runId: "20261120-060000-gone01", owner: "someone@else", createdAt: ago(30 * H), expiresAt: ago(H) }), // runctl's: swept
      ],
      keys: [{ KeyName: "my-key", KeyPairId: "key-0eeeeeeeeeeeeeee1", Tags: hand([{ Key: TAG.owner, Value: "me" }]) }],
      groups: [{ GroupId: "sg-0eeeeeeeeeeeeeee1", GroupName: "mine", Tags: hand([{ Key: TAG.createdAt, Value: ago(30 * H) }]) }],
    });
    const report = await sweepEc2({ region: "us-east-1", client, now: NOW, owner: "all", runEnded: () => undefined, ...FAST });
    expect(mutatingCalls(mock)).toEqual([["DeleteVolumeCommand", ["vol-0eeeeeeeeeeeeeee9"]]]);
    const named = [...report.found, ...report.kept.map((k) => k.resource)].map((r) => r.id);
    expect(named).toEqual(["vol-0eeeeeeeeeeeeeee9"]);
  });
});

describe("snapshots (issue 10, item 12)", () => {
  const snap = (id: string, t: Parameters<typeof tags>[0] | undefined, extra: Record<string, unknown> = {}) => ({
    SnapshotId: id,
    VolumeId: "vol-0fffffffffffffff0",
    State: "completed",
    StartTime: new Date(ago(8 * 24 * H)),
    VolumeSize: 10,
    OwnerId: "123456789012",
    ...(t ? { Tags: tags(t) } : {}),
    ...extra,
  });

  it("expired snapshots are swept; fresh, persistent, pending, hand-tagged and persistent volumes' ones are not", async () => {
    const { client, mock } = mocked();
    const old = { owner: ME, createdAt: ago(8 * 24 * H), expiresAt: ago(24 * H) };
    account(mock, {
      volumes: [vol("vol-0fffffffffffffff1", { runId: "volume:imagenet", owner: ME, createdAt: ago(100 * H), persistent: true })],
      snapshots: [
        snap("snap-0fffffffffffffff1", { runId: "volume:vol-0fffffffffffffff0", ...old }),
        snap("snap-0fffffffffffffff2", { runId: "20261120-060000-done01", ...old }), // a run's snapshot: its own expiry, not the run's end, ends it
        snap("snap-0fffffffffffffff3", { runId: "volume:vol-0fffffffffffffff0", owner: ME, createdAt: ago(H), expiresAt: later(6 * 24 * H) }),
        snap("snap-0fffffffffffffff4", { runId: "volume:vol-0fffffffffffffff0", owner: ME, createdAt: ago(8 * 24 * H), persistent: true }),
        snap("snap-0fffffffffffffff5", { runId: "volume:imagenet", ...old }, { VolumeId: "vol-0fffffffffffffff1" }),
        snap("snap-0fffffffffffffff6", { runId: "volume:vol-0fffffffffffffff0", ...old }, { State: "pending" }),
        snap("snap-0fffffffffffffff7", undefined, { Tags: [{ Key: TAG.runId, Value: "x" }, { Key: TAG.expiresAt, Value: ago(H) }] }),
      ],
    });
    const report = await sweepEc2({ region: "us-east-1", client, now: NOW, runEnded: () => undefined, ...FAST });
    expect(mock.commandCalls(DescribeSnapshotsCommand)[0]!.args[0].input).toMatchObject({ OwnerIds: ["self"], Filters: [{ Name: "tag-key", Values: [TAG.runId] }] });
    expect(mock.commandCalls(DeleteSnapshotCommand).map((c) => c.args[0].input.SnapshotId).sort()).toEqual(["snap-0fffffffffffffff1", "snap-0fffffffffffffff2"]);
    expect(ids(report.deleted)).toEqual(["snap-0fffffffffffffff1", "snap-0fffffffffffffff2"]);
    expect(report.deleted[0]!.kind).toBe("snapshot");
    expect(keptReason(report, "snap-0fffffffffffffff3")).toMatch(/^expires at/);
    expect(keptReason(report, "snap-0fffffffffffffff4")).toBe("persistent");
    expect(keptReason(report, "snap-0fffffffffffffff5")).toMatch(/persistent volume vol-0fffffffffffffff1/);
    expect(keptReason(report, "snap-0fffffffffffffff6")).toMatch(/being created/);
    expect(keptReason(report, "snap-0fffffffffffffff7")).toBeUndefined();
    const ledger = readFileSync(resourceLedgerPath(), "utf8");
    expect(ledger).toContain('"snap-0fffffffffffffff1"');
  });

  it("a snapshot an AMI uses is kept for the next sweep", async () => {
    const { client, mock } = mocked();
    account(mock, { snapshots: [snap("snap-0fffffffffffffff8", { runId: "volume:vol-0fffffffffffffff0", owner: ME, createdAt: ago(8 * 24 * H), expiresAt: ago(H) })] });
    mock.on(DeleteSnapshotCommand).rejects(awsError("InvalidSnapshot.InUse", "The snapshot snap-0fffffffffffffff8 is currently in use by ami-0123456789abcdef0"));
    const report = await sweepEc2({ region: "us-east-1", client, now: NOW, runEnded: () => undefined, ...FAST });
    expect(report.errors).toEqual([]);
    expect(keptReason(report, "snap-0fffffffffffffff8")).toMatch(/AMI/);
  });
});

describe("Runctl.sweep through ec2() (issue 10, item 13)", () => {
  it("uses the provider's own owner (ec2({ owner })) unless the sweep names one", async () => {
    const { client, mock } = mocked();
    account(mock, {
      keys: [
        { KeyName: "runctl-bob", KeyPairId: "key-0aaaaaaaaaaaaaab1", Tags: tags({ runId: "20261120-060000-bob001", owner: BOB, createdAt: ago(30 * H), expiresAt: ago(H) }) },
        { KeyName: "runctl-me", KeyPairId: "key-0aaaaaaaaaaaaaab2", Tags: tags({ runId: "20261120-060000-me0001", owner: ME, createdAt: ago(30 * H), expiresAt: ago(H) }) },
      ],
    });
    const provider = ec2({ region: "us-east-1", instanceType: "t3.micro", owner: BOB, clients: { ec2: client } });
    const report = await Runctl.sweep({ provider, dryRun: true });
    expect(ids(report.found)).toEqual(["runctl-bob"]);
    expect(keptReason(report, "runctl-me")).toMatch(/owned by/);
    const mine = await Runctl.sweep({ provider, dryRun: true, owner: ME });
    expect(ids(mine.found)).toEqual(["runctl-me"]);
  });
});
