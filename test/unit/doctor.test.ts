import { CreateSecurityGroupCommand, DescribeInstancesCommand, EC2Client, ImportKeyPairCommand, RunInstancesCommand } from "@aws-sdk/client-ec2";
import { describe, expect, it } from "vitest";
import { RunctlError, doctor, local, type DoctorCheck, type Provider } from "runctl";
import { ec2 } from "runctl/aws";
import { parseCliArgs } from "../../src/cli/cli-args.js";
import { checkLines } from "../../src/cli/doctor-command.js";
import { diskCheck, gpuCheck, pythonCheck, s3ToolsCheck, torchCheck } from "../../src/engine/doctor/machine-checks.js";
import { storageFailureCheck } from "../../src/engine/doctor/storage-check.js";
import { dryRunCheck } from "../../src/providers/ec2/ec2-doctor.js";
import { sshFailureCheck } from "../../src/providers/ssh-hosts/ssh-doctor.js";
import { ec2Error, fakeEc2 } from "../support/fake-ec2.js";

const r = (exitCode: number | null, stdout = "", stderr = "") => ({ exitCode, stdout, stderr });
const GiB = 2 ** 30;

describe("doctor: each machine check's classification", () => {
  it("python3: >= 3.8 ok; older, missing or broken fail with a fix", () => {
    expect(pythonCheck("h", "python3", r(0, "3.12.3\n"))).toMatchObject({ id: "python", status: "ok", detail: "Python 3.12.3" });
    expect(pythonCheck("h", "python3", r(0, "3.8.0\n")).status).toBe("ok");
    const old = pythonCheck("h", "python3", r(0, "3.7.17\n"));
    expect(old).toMatchObject({ status: "fail", detail: "Python 3.7.17 is older than 3.8" });
    expect(old.fix).toMatch(/Install Python 3\.8/);
    expect(pythonCheck("h", "/opt/py/bin/python3", r(127))).toMatchObject({ status: "fail", detail: "/opt/py/bin/python3 not found" });
    expect(pythonCheck("h", "python3", r(1, "", "Segmentation fault")).detail).toMatch(/did not run \(exit 1\): Segmentation fault/);
  });

  it("torch: importable ok with CUDA state; missing is a warning with a fix, not a failure", () => {
    expect(torchCheck("h", r(0, "torch 2.5.1+cu124 cuda=True\n"))).toMatchObject({ status: "ok", detail: "torch 2.5.1+cu124, CUDA available" });
    expect(torchCheck("h", r(0, "torch 2.5.1 cuda=False\n")).detail).toBe("torch 2.5.1, CUDA not available");
    const missing = torchCheck("h", r(1, "", "Traceback...\nModuleNotFoundError: No module named 'torch'\n"));
    expect(missing).toMatchObject({ status: "warn", detail: "torch is not installed for this Python" });
    expect(missing.fix).toMatch(/pip install torch/);
  });

  it("disk: below the failure threshold fails, below the warning one warns, else ok; unreadable df warns", () => {
    const df = (availableKb: number) => `Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sda1 100000000 1 ${availableKb} 5% /data disk\n`;
    const limits = { failBelow: 2 * GiB, warnBelow: 10 * GiB };
    expect(diskCheck("h", "/r", df(50 * 2 ** 20), limits)).toMatchObject({ status: "ok", detail: "50.0 GiB free on /data disk" });
    expect(diskCheck("h", "/r", df(5 * 2 ** 20), limits)).toMatchObject({ status: "warn", detail: "5.0 GiB free on /data disk, less than 10.0 GiB" });
    const full = diskCheck("h", "/r", df(2 ** 19), limits);
    expect(full).toMatchObject({ status: "fail", detail: "512.0 MiB free on /data disk, less than 2.0 GiB" });
    expect(full.fix).toMatch(/rootDir/);
    expect(diskCheck("h", "/r", "garbage", limits).status).toBe("warn");
  });

  it("GPU: listed GPUs ok; no nvidia-smi or no GPU is a warning (a CPU target), a broken driver a warning with a fix", () => {
    expect(gpuCheck("h", r(0, "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-a)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-b)\n"))).toMatchObject({ status: "ok", detail: "2 GPUs: NVIDIA H100 80GB HBM3" });
    expect(gpuCheck("h", r(127))).toMatchObject({ status: "warn", detail: expect.stringMatching(/no GPU visible/) });
    expect(gpuCheck("h", r(0, "")).status).toBe("warn");
    const broken = gpuCheck("h", r(9, "", "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."));
    expect(broken.status).toBe("warn");
    expect(broken.fix).toMatch(/driver/);
  });

  it("S3 tools: boto3 or the aws CLI is enough; neither fails", () => {
    expect(s3ToolsCheck("h", r(0, "boto3\naws-cli\n"))).toMatchObject({ status: "ok", detail: "found boto3 and aws-cli" });
    expect(s3ToolsCheck("h", r(0, "aws-cli\n")).status).toBe("ok");
    expect(s3ToolsCheck("h", r(0, "")).status).toBe("fail");
  });
});

describe("doctor: SSH, storage and EC2 failures say what to fix", () => {
  it("an unknown host key fails with the ssh-keyscan line to run (never trusted); other SSH codes get their fix", () => {
    const unknown = new RunctlError("HOST_KEY_MISMATCH", "The host key of 10.0.0.5:2222 is not in /k/known_hosts", {
      details: { host: "10.0.0.5:2222", knownHostsPath: "/k/known_hosts", presentedKeyType: "ssh-ed25519", presentedFingerprint: "SHA256:abc", reason: "unknown" },
    });
    const c = sshFailureCheck({ host: "10.0.0.5", port: 2222, username: "ml" }, unknown);
    expect(c).toMatchObject({ id: "transport", title: "SSH to ml@10.0.0.5:2222", status: "fail", code: "HOST_KEY_MISMATCH" });
    expect(c.fix).toContain("ssh-keyscan -p 2222 -t ssh-ed25519 10.0.0.5 >> /k/known_hosts");
    expect(c.fix).toContain("SHA256:abc");
    const changed = sshFailureCheck({ host: "h", port: 2222 }, new RunctlError("HOST_KEY_MISMATCH", "HOST KEY MISMATCH", { details: { reason: "changed", knownHostsPath: "/k" } }));
    expect(changed.fix).toContain("ssh-keygen -R '[h]:2222' -f /k");
    // An ssh-config alias: the key is recorded under its HostName and Port, which the error carries.
    const alias = new RunctlError("HOST_KEY_MISMATCH", "not in known_hosts", {
      details: { host: "gpu", hostName: "10.0.0.7", port: 2200, knownHostsPath: "/k", presentedKeyType: "ssh-ed25519", presentedFingerprint: "SHA256:x", reason: "unknown" },
    });
    expect(sshFailureCheck({ host: "gpu" }, alias).fix).toContain("ssh-keyscan -p 2200 -t ssh-ed25519 10.0.0.7 >> /k");
    expect(sshFailureCheck({ host: "gpu" }, new RunctlError("HOST_KEY_MISMATCH", "changed", { details: { hostName: "10.0.0.7", port: 2200, knownHostsPath: "/k", reason: "changed" } })).fix).toContain("ssh-keygen -R '[10.0.0.7]:2200' -f /k");
    expect(sshFailureCheck({ host: "h" }, new RunctlError("AUTH_FAILED", "refused")).fix).toMatch(/--identity/);
    expect(sshFailureCheck({ host: "h" }, new RunctlError("HOST_UNREACHABLE", "ECONNREFUSED", { retryable: true }))).toMatchObject({ code: "HOST_UNREACHABLE", fix: expect.stringMatching(/port/) });
  });

  it("storage: a missing bucket and a refused list name their fix", () => {
    const e = (awsCode: string) => new RunctlError("STORAGE_ERROR", `S3 list failed: ${awsCode}`, { details: { awsCode } });
    expect(storageFailureCheck("s3://b/p", e("NoSuchBucket"))).toMatchObject({ status: "fail", code: "NoSuchBucket", fix: expect.stringMatching(/bucket name/) });
    expect(storageFailureCheck("s3://b/p", e("AccessDenied")).fix).toMatch(/s3:ListBucket.*docs\/iam-policy\.json/);
  });

  it("EC2 DryRun: DryRunOperation is allowed, UnauthorizedOperation names the action and the policy", () => {
    const rc = (code: string) => new RunctlError("CLOUD_ERROR", `RunInstances failed (${code})`, { details: { awsCode: code } });
    expect(dryRunCheck("ec2:RunInstances", rc("DryRunOperation"))).toMatchObject({ id: "iam:ec2:RunInstances", status: "ok" });
    const missing = dryRunCheck("ec2:RunInstances", rc("UnauthorizedOperation"));
    expect(missing).toMatchObject({ status: "fail", code: "UnauthorizedOperation", detail: "missing permission ec2:RunInstances" });
    expect(missing.fix).toMatch(/Ec2LaunchTaggedResources.*docs\/iam-policy\.json.*docs\/guides\/iam\.md/);
    expect(dryRunCheck("ec2:RunInstances", rc("AuthFailure")).status).toBe("fail");
    expect(dryRunCheck("ec2:RunInstances", rc("InvalidAMIID.Malformed")).status).toBe("warn");
    expect(dryRunCheck("ec2:RunInstances", undefined).status).toBe("warn");
  });
});

describe("doctor() on the mocked EC2 control plane", () => {
  const dryRunOk = () => ec2Error("DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412);
  const denied = () => ec2Error("UnauthorizedOperation", "You are not authorized to perform this operation. Encoded authorization failure message: xyz", 403);

  it("every action allowed: all ok, DryRun on each call, nothing launched", async () => {
    const fake = fakeEc2();
    for (const cmd of [DescribeInstancesCommand, RunInstancesCommand, CreateSecurityGroupCommand, ImportKeyPairCommand]) fake.ec2Mock.on(cmd as never, { DryRun: true } as never).rejects(dryRunOk());
    const report = await doctor(ec2({ region: "us-east-1", instanceType: "t3.micro", clients: { ec2: fake.ec2, ssm: fake.ssm } }));
    expect(report.checks.map((c) => [c.id, c.status])).toEqual([
      ["aws-credentials", "ok"],
      ["iam:ec2:DescribeInstances", "ok"],
      ["iam:ec2:RunInstances", "ok"],
      ["iam:ec2:CreateSecurityGroup", "ok"],
      ["iam:ec2:ImportKeyPair", "ok"],
    ]);
    expect(report.ok).toBe(true);
    expect(fake.instances.size).toBe(0);
    expect(fake.keyPairs.size + fake.securityGroups.size).toBe(0);
    const run = fake.ec2Mock.commandCalls(RunInstancesCommand)[0]!.args[0].input;
    expect(run).toMatchObject({ DryRun: true, InstanceType: "t3.micro", ImageId: expect.stringMatching(/^ami-/) });
  });

  it("a denied RunInstances fails the report with the action named", async () => {
    const fake = fakeEc2();
    for (const cmd of [DescribeInstancesCommand, CreateSecurityGroupCommand, ImportKeyPairCommand]) fake.ec2Mock.on(cmd as never, { DryRun: true } as never).rejects(dryRunOk());
    fake.ec2Mock.on(RunInstancesCommand, { DryRun: true }).rejects(denied());
    const report = await doctor(ec2({ region: "us-east-1", instanceType: "t3.micro", clients: { ec2: fake.ec2, ssm: fake.ssm } }));
    expect(report.ok).toBe(false);
    const failed = report.checks.filter((c) => c.status === "fail");
    expect(failed.map((c) => c.id)).toEqual(["iam:ec2:RunInstances"]);
    expect(checkLines(failed[0]!)).toEqual([
      "[FAIL] IAM allows ec2:RunInstances: missing permission ec2:RunInstances (UnauthorizedOperation)",
      expect.stringMatching(/^ {7}fix: Allow ec2:RunInstances \(statement Ec2LaunchTaggedResources\) for this user or role: docs\/iam-policy\.json/),
    ]);
    expect(fake.instances.size).toBe(0);
  });

  it("credentials that do not resolve fail first, and no EC2 call is made", async () => {
    const fake = fakeEc2();
    const noCredentials = new EC2Client({ region: "us-east-1", maxAttempts: 1, credentials: () => Promise.reject(new Error("Could not load credentials from any providers")) });
    const report = await doctor(ec2({ region: "us-east-1", instanceType: "t3.micro", clients: { ec2: noCredentials, ssm: fake.ssm } }));
    expect(report.ok).toBe(false);
    expect(report.checks).toEqual([expect.objectContaining({ id: "aws-credentials", status: "fail", detail: "Could not load credentials from any providers", fix: expect.stringMatching(/aws configure/) })]);
  });
});

describe("doctor(): providers without checks, and the CLI's arguments", () => {
  it("a provider without doctor() is a skip, not a failure", async () => {
    const bare: Provider = { name: "bare", sharesLocalFilesystem: false, provision: () => Promise.reject(new Error("no")), release: async () => {} };
    const report = await doctor(bare);
    expect(report).toEqual({ ok: true, checks: [{ id: "provider", title: "bare provider", status: "skip", detail: "the bare provider has no doctor checks" }] satisfies DoctorCheck[] });
  });

  it("the local provider reports this machine and its python", async () => {
    const report = await doctor(local({ rootDir: "/nonexistent-runctl-doctor/deeper" }), { minFreeBytes: 1, warnFreeBytes: 1 });
    expect(report.checks.map((c) => c.id)).toEqual(["transport", "python", "torch", "disk", "gpu"]);
    expect(report.checks.find((c) => c.id === "disk")).toMatchObject({ status: "ok", title: "free disk in /nonexistent-runctl-doctor/deeper on localhost" });
  });

  it("doctor [FILE | --host H [--identity KEY]] [--json]", () => {
    expect(parseCliArgs(["doctor"])).toEqual({ kind: "doctor", json: false, file: undefined, host: undefined, identity: undefined });
    expect(parseCliArgs(["doctor", "plan.mjs", "--json"])).toEqual({ kind: "doctor", json: true, file: "plan.mjs", host: undefined, identity: undefined });
    expect(parseCliArgs(["doctor", "--host", "ml@h:2222", "--identity", "/k"])).toMatchObject({ host: "ml@h:2222", identity: "/k", file: undefined });
    expect(() => parseCliArgs(["doctor", "plan.mjs", "--host", "h"])).toThrow(/FILE or --host, not both/);
    expect(() => parseCliArgs(["doctor", "--identity", "/k"])).toThrow(/--identity goes with --host/);
    expect(() => parseCliArgs(["doctor", "a", "b"])).toThrow(/takes one FILE/);
  });
});
