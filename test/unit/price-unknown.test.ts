import { GetParameterCommand } from "@aws-sdk/client-ssm";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runctl, onDemandPrice, type Storage } from "runctl";
import { ec2, s3 } from "runctl/aws";
import { planCommand } from "../../src/cli/plan-command.js";
import { meteredEc2Price } from "../../src/providers/ec2/ec2-price.js";
import { caught } from "../support/caught.js";
import { fakeEc2, type FakeEc2 } from "../support/fake-ec2.js";
import { fakeSsm, type FakeSsm } from "../support/fake-ssm.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../support/s3-server.js";
import { useTempRunctlHome, tempDir } from "../support/temp-home.js";

// Issue 16 item 8: a price nobody knows is never $0, and .plan() and .train() agree on it.
useTempRunctlHome("price-unknown");
const REGION = "ap-south-1"; // outside the static catalog
const TYPE = "g5.xlarge";
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

/** A fake account in REGION whose instances never leave `pending`: a launch that gets that far fails fast with PROVISION_TIMEOUT. */
function account(): { fake: FakeEc2; ssm: FakeSsm } {
  const ssm = fakeSsm({ instanceId: INSTANCE, env: {} });
  ssm.mock.on(GetParameterCommand).callsFake((input: { Name: string }) => ({ Parameter: { Name: input.Name, Type: "String", Value: "ami-0f0e0d0c0b0a09080" } }));
  return { fake: fakeEc2({ region: REGION, instanceIds: [INSTANCE], stuckPending: true }), ssm };
}

const provider = (a: { fake: FakeEc2; ssm: FakeSsm }, extra: Record<string, unknown> = {}) =>
  ec2({ region: REGION, instanceType: TYPE, instanceProfile: "runctl-test", access: { kind: "ssm", staging, user: null }, clients: { ec2: a.fake.ec2, ssm: a.ssm.client }, pollMs: 5, runningTimeoutMs: 50, ...extra });

const mutating = (calls: readonly string[]) => calls.filter((c) => /^(Run|Create|Import|Authorize|Terminate|Delete)/.test(c));

/** Every dollar amount of zero in a text: "$0", "$0.00", "$0.0000" (not "$0.5"). */
const ZERO_DOLLARS = /\$0(?:\.0*)?(?![.\d])/;

describe("a price outside the catalog (issue 16 item 8)", () => {
  it("the region really is outside the catalog", () => {
    expect(onDemandPrice(REGION, TYPE)).toBeUndefined();
  });

  it(".plan() says unknown, never $0, and does not refuse without a money budget", async () => {
    const a = account();
    const summary = await Runctl.instance(provider(a)).budget({ maxDurationMs: 3600_000 }).plan("train.py");
    a.ssm.restore();
    expect(summary.estimate.hourlyUsd).toBeNull();
    expect(summary.estimate.maxTotalUsd).toBeNull();
    expect(summary.estimate.basis).toMatch(/^unknown: No price is known for g5\.xlarge in ap-south-1.*ec2\(\{ hourlyPriceUsd \}\)/);
    expect(summary.refusal).toBeNull();
    expect(JSON.stringify(summary)).not.toMatch(ZERO_DOLLARS);
    expect(JSON.stringify(summary)).not.toMatch(/"hourlyUsd":0[,}]/);
    expect(mutating(a.fake.calls())).toEqual([]);
  });

  it("with a money budget, .plan() reports the refusal .train() throws: same code, same message, nothing created", async () => {
    const a = account();
    const plan = Runctl.instance(provider(a)).checkpoints({ storage: staging }).budget({ maxUsd: 5, maxDurationMs: 3600_000 });
    const summary = await plan.plan("train.py");
    const err = await caught(Promise.resolve(plan.train("train.py")));
    a.ssm.restore();
    expect(err.code).toBe("PRICE_UNKNOWN");
    expect(err.message).toMatch(/No price is known for g5\.xlarge in ap-south-1: .*us-east-1, us-west-2, eu-west-1 only\. Pass ec2\(\{ hourlyPriceUsd \}\)/);
    expect(summary.refusal).toEqual({ code: err.code, message: err.message });
    expect(summary.estimate.withinBudget).toBe(false);
    expect(summary.estimate.hourlyUsd).toBeNull();
    expect(mutating(a.fake.calls())).toEqual([]);
  });

  it("ec2({ hourlyPriceUsd }) prices it for both: over budget both refuse with BUDGET_EXCEEDED and the same message", async () => {
    const a = account();
    const plan = Runctl.instance(provider(a, { hourlyPriceUsd: 2 })).checkpoints({ storage: staging }).budget({ maxUsd: 5, maxDurationMs: 3 * 3600_000 });
    const summary = await plan.plan("train.py");
    const err = await caught(Promise.resolve(plan.train("train.py")));
    a.ssm.restore();
    expect(summary.estimate).toMatchObject({ hourlyUsd: 2, maxTotalUsd: 6, basis: "given", budgetUsd: 5, withinBudget: false });
    expect(err.code).toBe("BUDGET_EXCEEDED");
    expect(summary.refusal).toEqual({ code: "BUDGET_EXCEEDED", message: err.message });
    expect(err.message).toMatch(/\$6\.00 \(\$2\/h, given, for 3 h\), more than its budget of \$5/);
    expect(mutating(a.fake.calls())).toEqual([]);
  });

  it("ec2({ hourlyPriceUsd }) within budget: .plan() does not refuse and .train() goes on to launch", async () => {
    const a = account();
    const plan = Runctl.instance(provider(a, { hourlyPriceUsd: 1 })).checkpoints({ storage: staging }).budget({ maxUsd: 5, maxDurationMs: 3 * 3600_000 });
    const summary = await plan.plan("train.py");
    const err = await caught(Promise.resolve(plan.train("train.py")));
    a.ssm.restore();
    expect(summary.refusal).toBeNull();
    expect(summary.estimate).toMatchObject({ hourlyUsd: 1, maxTotalUsd: 3, withinBudget: true });
    // Past the budget check: it launched (and the fake never let the instance run).
    expect(err.code).toBe("PROVISION_TIMEOUT");
    expect(a.fake.inputsOf("RunInstances")).toHaveLength(1);
  });

  it("a launched instance with no known price warns that its cost is not metered, and is metered at 0 (unpriced: no cost events)", async () => {
    const a = account();
    const warnings: string[] = [];
    const hourly = await meteredEc2Price({ region: REGION }, () => a.fake.ec2, TYPE, "on-demand", undefined, undefined, (m) => warnings.push(m));
    const given = await meteredEc2Price({ region: REGION, hourlyPriceUsd: 1.5 }, () => a.fake.ec2, TYPE, "on-demand", undefined, undefined, (m) => warnings.push(m));
    a.ssm.restore();
    expect([hourly, given]).toEqual([0, 1.5]);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^runctl: No price is known for g5\.xlarge in ap-south-1.*Its cost is not metered\.$/);
  });

  it("`runctl plan` prints unknown, the refusal, and no $0", async () => {
    const a = account();
    const dir = tempDir("price");
    const file = join(dir, "plan.mjs");
    writeFileSync(file, "export const plan = globalThis.__runctlPricePlan; export const script = 'train.py';\n");
    (globalThis as Record<string, unknown>)["__runctlPricePlan"] = Runctl.instance(provider(a)).checkpoints({ storage: staging }).budget({ maxUsd: 5, maxDurationMs: 3600_000 });
    let out = "";
    const code = await planCommand({ file, json: false }, { stdout: { write: (s: string) => (out += s) }, stderr: { write: () => true } });
    a.ssm.restore();
    expect(code).toBe(0);
    expect(out).toMatch(/^estimate: unknown\/h; expected total unknown \(no price known\)$/m);
    expect(out).toMatch(/^refused: PRICE_UNKNOWN: No price is known for g5\.xlarge in ap-south-1/m);
    expect(out).not.toMatch(ZERO_DOLLARS);
  });
});
