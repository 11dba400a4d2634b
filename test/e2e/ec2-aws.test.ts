/**
 * The same example on a real AWS account: only with RUNCTL_E2E_AWS=1 (the only tests allowed to
 * skip). Needs AWS credentials, AWS_REGION, RUNCTL_S3_URI (a bucket prefix you own) and
 * RUNCTL_EC2_PROFILE (an instance profile that can write there). A run launches one t3.micro
 * on-demand for about 5 minutes: about $0.002 of EC2 plus a few hundred S3 requests (< $0.01).
 */
import { beforeAll, describe, expect, it } from "vitest";
import { Runctl, listRecordedResources } from "runctl";
import { ec2, s3 } from "runctl/aws";
import { main as ec2Train } from "../../examples/ec2-train.js";
import { useTempRunctlHome } from "../support/temp-home.js";

const enabled = process.env["RUNCTL_E2E_AWS"] === "1";
const region = process.env["AWS_REGION"] ?? process.env["AWS_DEFAULT_REGION"] ?? "";
const uri = process.env["RUNCTL_S3_URI"] ?? "";
const profile = process.env["RUNCTL_EC2_PROFILE"];

describe.skipIf(!enabled)("EC2 on a real AWS account (RUNCTL_E2E_AWS=1)", () => {
  // In a hook, so that a skipped suite makes no folder (a skipped file runs no afterAll to remove it).
  beforeAll(() => void useTempRunctlHome("e2e-aws"));

  it("examples/ec2-train.ts trains on a new t3.micro, commits verified checkpoints to S3, and leaves nothing behind", { timeout: 30 * 60_000 }, async () => {
    expect(region, "set AWS_REGION").not.toBe("");
    expect(uri, "set RUNCTL_S3_URI").toMatch(/^s3:\/\//);
    const provider = ec2({ region, instanceType: "t3.micro", ...(profile ? { instanceProfile: profile } : {}), ttlMs: 3600_000 });
    const storage = s3(uri, { region, forwardCredentials: !profile });
    const { runId, result } = await ec2Train({ provider, storage, budget: { maxUsd: 0.5, maxDurationMs: 20 * 60_000 }, verbose: true });
    expect(result.status, JSON.stringify(result.error)).toBe("succeeded");
    const latest = await Runctl.checkpoints(storage, runId).latest();
    expect(latest?.step).toBe(40);
    expect((await latest!.verify()).ok).toBe(true);
    expect(result.cost.usd).toBeGreaterThan(0);
    expect(listRecordedResources().filter((r) => r.runId === runId)).toEqual([]);
    const leftovers = await Runctl.sweep({ provider, dryRun: true });
    expect(leftovers.found.filter((r) => r.runId === runId)).toEqual([]);
  });
});
