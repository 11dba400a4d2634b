import {
  CreateSecurityGroupCommand,
  DescribeInstancesCommand,
  ImportKeyPairCommand,
  RunInstancesCommand,
  type EC2Client,
  type _InstanceType,
} from "@aws-sdk/client-ec2";
import type { SSMClient } from "@aws-sdk/client-ssm";
import { awsCall, resolveAwsRetry } from "../../aws/aws-call.js";
import { awsErrorCode } from "../../aws/aws-errors.js";
import { AWS_FEATURES, RUNCTL_RUN_TAG } from "../../aws/iam-actions.js";
import { isRunctlError } from "../../errors/runctl-error.js";
import type { DoctorCheck } from "../../util/doctor-check.js";
import type { Ec2ProviderOptions } from "./ec2-options.js";
import { describeInstanceType, resolveMachineImage } from "./machine-image.js";

/** Where a missing IAM action is explained; named in every fix. */
const IAM_DOCS = "docs/iam-policy.json (see docs/guides/iam.md)";
/** AWS codes that mean the credentials themselves are refused, whatever the action. */
const CREDENTIAL_CODES = new Set(["AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "UnrecognizedClientException", "OptInRequired"]);
/** The tag every dry-run creation carries, as a real one would (tag-on-create is authorized with it). */
const DOCTOR_TAGS = [{ Key: RUNCTL_RUN_TAG, Value: "runctl-doctor" }];
// A well-formed ed25519 public key of zero bytes: ImportKeyPair validates the material even in a dry run.
const DUMMY_PUBLIC_KEY = (() => {
  const sshString = (b: Buffer): Buffer => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(b.length);
    return Buffer.concat([length, b]);
  };
  return `ssh-ed25519 ${Buffer.concat([sshString(Buffer.from("ssh-ed25519")), sshString(Buffer.alloc(32, 1))]).toString("base64")} runctl-doctor`;
})();

/**
 * The doctor's check of one EC2 action from its DryRun answer: `DryRunOperation` is allowed,
 * `UnauthorizedOperation` is a missing IAM permission (named, with where the policy is), refused
 * credentials fail too; anything else is a warning (AWS could not tell).
 *
 * @param outcome - The error the dry-run call threw, or undefined when it succeeded (DryRun ignored).
 * @example
 * ```ts
 * dryRunCheck("ec2:RunInstances", err).status; // "fail" for UnauthorizedOperation
 * ```
 */
export function dryRunCheck(action: string, outcome: unknown): DoctorCheck {
  const id = `iam:${action}`;
  const title = `IAM allows ${action}`;
  if (outcome === undefined) return { id, title, status: "warn", detail: "the call succeeded although it was a dry run (AWS did not honor DryRun)" };
  const code = awsErrorCode(outcome);
  if (code === "DryRunOperation") return { id, title, status: "ok", detail: "allowed (DryRun)" };
  const message = outcome instanceof Error ? outcome.message : String(outcome);
  if (code === "UnauthorizedOperation") {
    return { id, title, status: "fail", code, detail: `missing permission ${action}`, fix: `Allow ${action}${sidOf(action)} for this user or role: ${IAM_DOCS}.` };
  }
  if (code && CREDENTIAL_CODES.has(code)) {
    return { id, title, status: "fail", code, detail: `AWS refused the credentials: ${message}`, fix: "Check the AWS credentials (aws configure, AWS_PROFILE, the environment variables) and the region." };
  }
  return { id, title, status: "warn", ...(code ? { code } : {}), detail: `could not tell: ${message}` };
}

/** ` (statement Sid)` of the policy statement that allows `action`, for the fix text. */
function sidOf(action: string): string {
  for (const f of AWS_FEATURES) for (const s of f.statements) if (s.Action.includes(action)) return ` (statement ${s.Sid})`;
  return "";
}

/**
 * The EC2 provider's doctor checks: credentials resolve, then each EC2 action a run of these options
 * calls with `DryRun: true` (RunInstances with its tags, so tag-on-create is checked too; the SSH
 * access's CreateSecurityGroup and ImportKeyPair). Creates nothing; actions that need an existing
 * resource (TerminateInstances, CreateTags on a running instance) and SSM (no DryRun) are not tried.
 *
 * @example
 * ```ts
 * const checks = await ec2DoctorChecks({ ec2: new EC2Client({}), ssm: new SSMClient({}) }, { region: "us-east-1", instanceType: "t3.micro" });
 * ```
 */
export async function ec2DoctorChecks(clients: { readonly ec2: EC2Client; readonly ssm: SSMClient }, options: Ec2ProviderOptions, signal?: AbortSignal): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [];
  try {
    await clients.ec2.config.credentials();
    checks.push({ id: "aws-credentials", title: `AWS credentials (${options.region})`, status: "ok", detail: "resolved" });
  } catch (err) {
    checks.push({
      id: "aws-credentials",
      title: `AWS credentials (${options.region})`,
      status: "fail",
      // The SDK's own error name (CredentialsProviderError): there is no AWS code before a call.
      ...(err instanceof Error && err.name !== "Error" ? { code: err.name } : {}),
      detail: err instanceof Error ? err.message : String(err),
      fix: "Configure AWS credentials: `aws configure` (or AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, an instance role).",
    });
    return checks;
  }
  const retry = resolveAwsRetry({ retries: 2 });
  const dryRun = async (action: string, send: (http: { abortSignal?: AbortSignal }) => Promise<unknown>): Promise<DoctorCheck> => {
    const outcome = await awsCall(action, send, { retry, signal }).then(
      () => undefined,
      (err: unknown) => err,
    );
    if (isRunctlError(outcome) && outcome.code === "ABORTED") throw outcome;
    return dryRunCheck(action, outcome ?? undefined);
  };

  checks.push(await dryRun("ec2:DescribeInstances", (http) => clients.ec2.send(new DescribeInstancesCommand({ DryRun: true, MaxResults: 5 }), http)));
  if (options.instanceId === undefined && options.instanceType !== undefined) {
    const instanceType = options.instanceType;
    let imageId: string | undefined;
    try {
      imageId = (await resolveMachineImage(clients, await describeInstanceType(clients.ec2, instanceType, signal), options.ami, signal)).imageId;
    } catch (err) {
      if (isRunctlError(err) && err.code === "ABORTED") throw err;
      checks.push({ id: "ec2-image", title: `machine image for ${instanceType}`, status: "fail", ...(isRunctlError(err) ? { code: err.code } : {}), detail: err instanceof Error ? err.message : String(err), fix: `Check instanceType and ami, and that ec2:DescribeInstanceTypes, ec2:DescribeImages and ssm:GetParameter are allowed: ${IAM_DOCS}.` });
    }
    if (imageId !== undefined) {
      const id = imageId;
      const tagged = ["instance", "volume"].map((ResourceType) => ({ ResourceType: ResourceType as "instance", Tags: DOCTOR_TAGS }));
      checks.push(
        await dryRun("ec2:RunInstances", (http) =>
          clients.ec2.send(new RunInstancesCommand({ DryRun: true, ImageId: id, InstanceType: instanceType as _InstanceType, MinCount: 1, MaxCount: 1, TagSpecifications: tagged }), http),
        ),
      );
    }
  }
  const access = options.access ?? { kind: "ssh" as const };
  if (access.kind === "ssh" && options.instanceId === undefined) {
    if (!options.securityGroupIds) {
      checks.push(
        await dryRun("ec2:CreateSecurityGroup", (http) =>
          clients.ec2.send(new CreateSecurityGroupCommand({ DryRun: true, GroupName: "runctl-doctor", Description: "runctl doctor dry run", TagSpecifications: [{ ResourceType: "security-group", Tags: DOCTOR_TAGS }] }), http),
        ),
      );
    }
    if (access.keyPairName === undefined) {
      checks.push(
        await dryRun("ec2:ImportKeyPair", (http) =>
          clients.ec2.send(new ImportKeyPairCommand({ DryRun: true, KeyName: "runctl-doctor", PublicKeyMaterial: Buffer.from(DUMMY_PUBLIC_KEY), TagSpecifications: [{ ResourceType: "key-pair", Tags: DOCTOR_TAGS }] }), http),
        ),
      );
    }
  }
  if (access.kind === "ssm") checks.push({ id: "iam:ssm", title: "IAM allows ssm:SendCommand", status: "skip", detail: "SSM has no DryRun; see the Ssm statements of docs/iam-policy.json" });
  return checks;
}
