/**
 * Every AWS call runctl's client makes, by feature, and the least-privilege IAM statements that
 * allow them. The source of docs/iam-policy.json (`node scripts/iam-policy.mjs`); a unit test scans
 * src/ for every command imported from `@aws-sdk/*` and fails when one is missing here, when a
 * listed call is no longer made, or when the JSON file is stale. Data only: no SDK import, so that
 * any layer (`runctl doctor`, docs tooling) can read it.
 */

/** The tag every resource runctl creates carries (providers/ec2/tags.ts `TAG.runId`); conditions key on it. */
export const RUNCTL_RUN_TAG = "runctl:run-id";
/** The one tag runctl changes on resources after creating them: the expiry it renews while a run is followed. */
export const RUNCTL_EXPIRY_TAG = "runctl:expires-at";
/** Placeholder for the bucket(s) of checkpoints, data, outputs and SSM staging. */
export const BUCKET_PLACEHOLDER = "YOUR-BUCKET";

/** One statement of an IAM policy, in the JSON shape IAM takes. */
export interface IamStatement {
  readonly Sid: string;
  readonly Effect: "Allow";
  readonly Action: readonly string[];
  readonly Resource: readonly string[];
  readonly Condition?: Readonly<Record<string, Readonly<Record<string, string | readonly string[]>>>>;
}

/** One feature of runctl that talks to AWS: the SDK calls it makes and the statements that allow them. */
export interface AwsFeature {
  /** The statements' Sid prefix (`Ec2Launch`). */
  readonly sid: string;
  /** What the feature is, for people. */
  readonly title: string;
  /** Where the calls are made (folders or files under src/). */
  readonly usedBy: readonly string[];
  /** SDK calls as `package:Command` (`client-ec2:RunInstances`, `client-s3:UploadPart`). */
  readonly calls: readonly string[];
  /** IAM actions that no SDK call names but AWS checks: `iam:PassRole` for an instance profile, `ec2:CreateTags` for tags given at creation. */
  readonly implied: readonly { readonly action: string; readonly why: string }[];
  readonly statements: readonly IamStatement[];
}

/** SDK calls whose IAM action is not `<service>:<Command>`. */
const ACTION_OVERRIDES: Readonly<Record<string, readonly string[]>> = {
  "client-s3:ListObjectsV2": ["s3:ListBucket"],
  "client-s3:HeadObject": ["s3:GetObject"],
  "client-s3:DeleteObjects": ["s3:DeleteObject"],
  // The multipart upload's requests are all allowed by s3:PutObject (storage/s3/s3-upload.ts);
  // aborting a failed one is s3:AbortMultipartUpload (client-s3:AbortMultipartUpload maps as is).
  "client-s3:CreateMultipartUpload": ["s3:PutObject"],
  "client-s3:UploadPart": ["s3:PutObject"],
  "client-s3:CompleteMultipartUpload": ["s3:PutObject"],
};

/**
 * The IAM actions an SDK call needs: `client-ec2:RunInstances` is `ec2:RunInstances`; S3
 * calls map as IAM names them (ListObjectsV2 is `s3:ListBucket`, UploadPart is `s3:PutObject`). Undefined for a
 * package runctl does not know how to map (the test then fails and asks for a mapping).
 *
 * @example
 * ```ts
 * iamActionsOf("client-s3:HeadObject"); // ["s3:GetObject"]
 * ```
 */
export function iamActionsOf(call: string): readonly string[] | undefined {
  const override = ACTION_OVERRIDES[call];
  if (override) return override;
  const m = /^client-(ec2|ssm|s3):([A-Z][A-Za-z0-9]+)$/.exec(call);
  return m ? [`${m[1]}:${m[2]}`] : undefined;
}

const EC2 = (type: string): string => `arn:aws:ec2:*:*:${type}/*`;
/** Images and snapshots have no account in their ARN. */
const EC2_NO_ACCOUNT = (type: string): string => `arn:aws:ec2:*::${type}/*`;
const TAGGED = { StringLike: { [`aws:ResourceTag/${RUNCTL_RUN_TAG}`]: "*" } } as const;
const TAGGING = { StringLike: { [`aws:RequestTag/${RUNCTL_RUN_TAG}`]: "*" } } as const;
const createAction = (...actions: string[]) => ({ StringEquals: { "ec2:CreateAction": actions } });
const statement = (Sid: string, Action: string[], Resource: string[], Condition?: IamStatement["Condition"]): IamStatement => ({ Sid, Effect: "Allow", Action, Resource, ...(Condition ? { Condition } : {}) });

/** runctl's AWS features, in the order of the policy. */
export const AWS_FEATURES: readonly AwsFeature[] = [
  {
    sid: "Ec2Launch",
    title: "EC2 launch: resolve the image, launch tagged instances, price them, renew their expiry, terminate them",
    usedBy: ["providers/ec2/ec2-provider.ts", "providers/ec2/launch-instance.ts", "providers/ec2/machine-image.ts", "providers/ec2/instance-state.ts", "providers/ec2/spot-price.ts", "providers/ec2/ec2-doctor.ts"],
    calls: [
      "client-ec2:RunInstances",
      "client-ec2:TerminateInstances",
      "client-ec2:DescribeInstances",
      "client-ec2:DescribeImages",
      "client-ec2:DescribeInstanceTypes",
      "client-ec2:DescribeSpotPriceHistory",
      "client-ec2:CreateTags",
      "client-ssm:GetParameter",
    ],
    implied: [
      { action: "iam:PassRole", why: "RunInstances with an instance profile (`ec2({ instanceProfile })`) passes its role to EC2" },
      { action: "ec2:CreateTags", why: "RunInstances tags the instance, its volumes, network interface and spot request as it creates them" },
    ],
    statements: [
      statement("Ec2LaunchDescribe", ["ec2:DescribeImages", "ec2:DescribeInstanceTypes", "ec2:DescribeInstances", "ec2:DescribeSpotPriceHistory"], ["*"]),
      statement("Ec2LaunchTaggedResources", ["ec2:RunInstances"], [EC2("instance"), EC2("volume"), EC2("network-interface"), EC2("spot-instances-request")], TAGGING),
      statement("Ec2LaunchUsedResources", ["ec2:RunInstances"], [EC2_NO_ACCOUNT("image"), EC2_NO_ACCOUNT("snapshot"), EC2("subnet"), EC2("security-group"), EC2("key-pair")]),
      statement("Ec2LaunchTagOnCreate", ["ec2:CreateTags"], [EC2("instance"), EC2("volume"), EC2("network-interface"), EC2("spot-instances-request")], createAction("RunInstances")),
      statement("Ec2LaunchRenewExpiry", ["ec2:CreateTags"], [EC2("instance"), EC2("volume"), EC2("security-group"), EC2("key-pair")], {
        ...TAGGED,
        "ForAllValues:StringEquals": { "aws:TagKeys": [RUNCTL_EXPIRY_TAG] },
      }),
      statement("Ec2LaunchTerminate", ["ec2:TerminateInstances"], [EC2("instance")], TAGGED),
      statement("Ec2LaunchPublicImages", ["ssm:GetParameter"], ["arn:aws:ssm:*::parameter/aws/service/*"]),
      statement("Ec2LaunchPassRole", ["iam:PassRole"], ["arn:aws:iam::*:role/*"], { StringEquals: { "iam:PassedToService": "ec2.amazonaws.com" } }),
    ],
  },
  {
    sid: "Ec2SshAccess",
    title: "SSH access (the default): a per-run key pair and a security group open on port 22 to one address",
    usedBy: ["providers/ec2/access-resources.ts", "providers/ec2/ec2-doctor.ts"],
    calls: [
      "client-ec2:DescribeSubnets",
      "client-ec2:DescribeVpcs",
      "client-ec2:ImportKeyPair",
      "client-ec2:CreateSecurityGroup",
      "client-ec2:AuthorizeSecurityGroupIngress",
      "client-ec2:DeleteSecurityGroup",
      "client-ec2:DeleteKeyPair",
    ],
    implied: [{ action: "ec2:CreateTags", why: "ImportKeyPair and CreateSecurityGroup tag what they create" }],
    statements: [
      statement("Ec2SshAccessDescribe", ["ec2:DescribeSubnets", "ec2:DescribeVpcs"], ["*"]),
      statement("Ec2SshAccessCreateTaggedGroup", ["ec2:CreateSecurityGroup"], [EC2("security-group")], TAGGING),
      statement("Ec2SshAccessCreateTaggedKey", ["ec2:ImportKeyPair"], [EC2("key-pair")], TAGGING),
      statement("Ec2SshAccessInVpc", ["ec2:CreateSecurityGroup"], [EC2("vpc")]),
      statement("Ec2SshAccessTagOnCreate", ["ec2:CreateTags"], [EC2("security-group"), EC2("key-pair")], createAction("CreateSecurityGroup", "ImportKeyPair")),
      statement("Ec2SshAccessManageOwn", ["ec2:AuthorizeSecurityGroupIngress", "ec2:DeleteKeyPair", "ec2:DeleteSecurityGroup"], [EC2("security-group"), EC2("key-pair")], TAGGED),
    ],
  },
  {
    sid: "Ssm",
    title: "SSM access (`access: { kind: \"ssm\" }`): run commands on runctl's instances with AWS-RunShellScript",
    usedBy: ["transport/ssm/"],
    calls: ["client-ssm:SendCommand", "client-ssm:GetCommandInvocation", "client-ssm:CancelCommand", "client-ssm:DescribeInstanceInformation"],
    implied: [],
    statements: [
      statement("SsmRunShellScript", ["ssm:SendCommand"], ["arn:aws:ssm:*::document/AWS-RunShellScript"]),
      statement("SsmOnOwnInstances", ["ssm:SendCommand"], [EC2("instance")], { StringLike: { [`ssm:resourceTag/${RUNCTL_RUN_TAG}`]: "*" } }),
      statement("SsmFollow", ["ssm:CancelCommand", "ssm:DescribeInstanceInformation", "ssm:GetCommandInvocation"], ["*"]),
    ],
  },
  {
    sid: "S3",
    title: "S3: checkpoints, data, outputs, SSM staging (and its sweep) in your bucket",
    usedBy: ["storage/s3/"],
    calls: ["client-s3:ListObjectsV2", "client-s3:GetObject", "client-s3:HeadObject", "client-s3:PutObject", "client-s3:DeleteObjects", "client-s3:AbortMultipartUpload", "client-s3:CreateMultipartUpload", "client-s3:UploadPart", "client-s3:CompleteMultipartUpload"],
    implied: [],
    statements: [
      statement("S3ListBucket", ["s3:ListBucket"], [`arn:aws:s3:::${BUCKET_PLACEHOLDER}`]),
      statement("S3Objects", ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"], [`arn:aws:s3:::${BUCKET_PLACEHOLDER}/*`]),
    ],
  },
  {
    sid: "Ebs",
    title: "EBS volumes and snapshots (`ebsVolumes()`): create, attach, detach, snapshot, restore, delete",
    usedBy: ["providers/ec2/ebs/"],
    calls: [
      "client-ec2:DescribeVolumes",
      "client-ec2:DescribeSnapshots",
      "client-ec2:DescribeInstances",
      "client-ec2:CreateVolume",
      "client-ec2:DeleteVolume",
      "client-ec2:AttachVolume",
      "client-ec2:DetachVolume",
      "client-ec2:CreateSnapshot",
      "client-ec2:DeleteSnapshot",
    ],
    implied: [{ action: "ec2:CreateTags", why: "CreateVolume and CreateSnapshot tag what they create" }],
    statements: [
      statement("EbsDescribe", ["ec2:DescribeInstances", "ec2:DescribeSnapshots", "ec2:DescribeVolumes"], ["*"]),
      statement("EbsCreateTaggedVolume", ["ec2:CreateVolume"], [EC2("volume")], TAGGING),
      statement("EbsCreateTaggedSnapshot", ["ec2:CreateSnapshot"], [EC2_NO_ACCOUNT("snapshot")], TAGGING),
      statement("EbsRestoreFromSnapshot", ["ec2:CreateVolume"], [EC2_NO_ACCOUNT("snapshot")]),
      statement("EbsSnapshotOwnVolumes", ["ec2:CreateSnapshot"], [EC2("volume")], TAGGED),
      statement("EbsTagOnCreate", ["ec2:CreateTags"], [EC2("volume"), EC2_NO_ACCOUNT("snapshot")], createAction("CreateSnapshot", "CreateVolume")),
      statement("EbsManageOwn", ["ec2:AttachVolume", "ec2:DeleteSnapshot", "ec2:DeleteVolume", "ec2:DetachVolume"], [EC2("volume"), EC2("instance"), EC2_NO_ACCOUNT("snapshot")], TAGGED),
    ],
  },
  {
    sid: "Sweep",
    title: "Sweep (`runctl sweep`, `Runctl.sweep`): find and delete runctl-tagged leftovers (S3 staging needs the S3 statements)",
    usedBy: ["providers/ec2/sweep-describe.ts", "providers/ec2/sweep-delete.ts"],
    calls: [
      "client-ec2:DescribeInstances",
      "client-ec2:DescribeVolumes",
      "client-ec2:DescribeSnapshots",
      "client-ec2:DescribeSecurityGroups",
      "client-ec2:DescribeKeyPairs",
      "client-ec2:TerminateInstances",
      "client-ec2:DeleteVolume",
      "client-ec2:DeleteSnapshot",
      "client-ec2:DeleteSecurityGroup",
      "client-ec2:DeleteKeyPair",
    ],
    implied: [],
    statements: [
      statement("SweepDescribe", ["ec2:DescribeInstances", "ec2:DescribeKeyPairs", "ec2:DescribeSecurityGroups", "ec2:DescribeSnapshots", "ec2:DescribeVolumes"], ["*"]),
      statement(
        "SweepDeleteOwn",
        ["ec2:DeleteKeyPair", "ec2:DeleteSecurityGroup", "ec2:DeleteSnapshot", "ec2:DeleteVolume", "ec2:TerminateInstances"],
        [EC2("instance"), EC2("volume"), EC2_NO_ACCOUNT("snapshot"), EC2("security-group"), EC2("key-pair")],
        TAGGED,
      ),
    ],
  },
];

/** Options of {@link iamPolicy}. */
export interface IamPolicyOptions {
  /** Only these features (by `sid`). @defaultValue all */
  readonly features?: readonly string[] | undefined;
  /** Your bucket names, in place of `YOUR-BUCKET`. @defaultValue the placeholder */
  readonly buckets?: readonly string[] | undefined;
  /** The role of your instance profile, in place of any role for iam:PassRole. @defaultValue any role (still only passed to EC2) */
  readonly role?: string | undefined;
}

/**
 * The least-privilege policy document for runctl's client, statement by statement from
 * {@link AWS_FEATURES}; with options, narrowed to your features, buckets and role.
 *
 * @example
 * ```ts
 * JSON.stringify(iamPolicy({ buckets: ["my-ckpt"], role: "runctl-training" }), null, 2);
 * ```
 */
export function iamPolicy(options: IamPolicyOptions = {}): { readonly Version: "2012-10-17"; readonly Statement: readonly IamStatement[] } {
  const features = options.features ? AWS_FEATURES.filter((f) => options.features!.includes(f.sid)) : AWS_FEATURES;
  const buckets = options.buckets && options.buckets.length > 0 ? options.buckets : [BUCKET_PLACEHOLDER];
  const resources = (s: IamStatement): readonly string[] =>
    s.Resource.flatMap((r) => {
      if (r.startsWith(`arn:aws:s3:::${BUCKET_PLACEHOLDER}`)) return buckets.map((b) => r.replace(BUCKET_PLACEHOLDER, b));
      if (options.role && r === "arn:aws:iam::*:role/*") return [`arn:aws:iam::*:role/${options.role}`];
      return [r];
    });
  return { Version: "2012-10-17", Statement: features.flatMap((f) => f.statements.map((s) => ({ ...s, Resource: resources(s) }))) };
}

/**
 * {@link iamPolicy} as the text of docs/iam-policy.json (two-space JSON and a final newline), which
 * the test compares byte for byte.
 *
 * @example
 * ```ts
 * writeFileSync("policy.json", iamPolicyJson({ buckets: ["my-ckpt"] }));
 * ```
 */
export function iamPolicyJson(options: IamPolicyOptions = {}): string {
  return `${JSON.stringify(iamPolicy(options), null, 2)}\n`;
}
