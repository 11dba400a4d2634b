import type { EC2Client } from "@aws-sdk/client-ec2";
import type { SSMClient } from "@aws-sdk/client-ssm";
import { RunctlError } from "../../errors/runctl-error.js";
import { lazySchema } from "../../util/lazy-schema.js";
import type { RunctlLogger } from "../../util/logger.js";
import type { Storage } from "../../storage/types.js";

/** Spot settings of {@link Ec2ProviderOptions.spot}. */
export interface Ec2SpotOptions {
  /** Highest price per hour you will pay. @defaultValue none: AWS caps a spot instance at the on-demand price */
  readonly maxPriceUsd?: number | undefined;
  /**
   * When no zone has spot capacity, launch on-demand instead (it costs more; the run records it and
   * warns). Off unless you ask: a silent switch to a 3–10× price is how budgets die.
   * @defaultValue false
   */
  readonly fallbackToOnDemand?: boolean | undefined;
}

/** SSH access: a key pair and a security group that lets only you in on port 22. */
export interface Ec2SshAccess {
  readonly kind: "ssh";
  /**
   * An existing EC2 key pair to launch with; `privateKeyPath` must then hold its private key.
   * @defaultValue none: runctl makes an ed25519 key, imports it as key pair `runctl-<runId>` (tagged), and deletes it at release
   */
  readonly keyPairName?: string | undefined;
  /** The private key of `keyPairName`. */
  readonly privateKeyPath?: string | undefined;
  /**
   * CIDR allowed to reach port 22 in the security group runctl creates.
   * @defaultValue this machine's public address (`https://checkip.amazonaws.com`) as a /32
   */
  readonly allowSshFrom?: string | undefined;
  /** Login user of the AMI. @defaultValue `"ubuntu"` (the Deep Learning and Ubuntu AMIs runctl picks) */
  readonly username?: string | undefined;
  /** Connect to the private address (you are inside the VPC, or on a VPN). @defaultValue false */
  readonly usePrivateIp?: boolean | undefined;
}

/** SSM access: no inbound port at all; commands go through AWS Systems Manager, files through S3. */
export interface Ec2SsmAccess {
  readonly kind: "ssm";
  /** S3 storage where files, stdin and long outputs are staged (the instance profile must reach it). */
  readonly staging: Storage;
  /** User that runs runctl's commands on the instance; null runs them as the SSM agent's user (root). @defaultValue `"ubuntu"` */
  readonly user?: string | null | undefined;
}

/**
 * Options of {@link ec2}.
 *
 * @example
 * ```ts
 * const options: Ec2ProviderOptions = {
 *   region: "us-east-1", instanceType: "g5.xlarge", spot: { fallbackToOnDemand: true },
 *   availabilityZones: ["us-east-1a", "us-east-1b"], instanceProfile: "runctl-training",
 * };
 * ```
 */
export interface Ec2ProviderOptions {
  /** AWS region. */
  readonly region: string;
  /** Instance type (`g5.xlarge`). Required unless `instanceId` attaches to an existing instance. */
  readonly instanceType?: string | undefined;
  /** Launch spot (one-time, terminate on interruption). @defaultValue false (on-demand) */
  readonly spot?: boolean | Ec2SpotOptions | undefined;
  /** Availability zones tried in order when one has no capacity. @defaultValue the region's choice */
  readonly availabilityZones?: readonly string[] | undefined;
  /** Subnets tried in order (each is in one zone); takes precedence over `availabilityZones`. @defaultValue the default VPC */
  readonly subnetIds?: readonly string[] | undefined;
  /**
   * AMI id. @defaultValue the newest AWS Deep Learning Base AMI (Ubuntu 22.04) for GPU types, Ubuntu
   * 22.04 for CPU types, resolved from AWS's public SSM parameters for the type's architecture
   */
  readonly ami?: string | undefined;
  /** Root volume. @defaultValue `{ sizeGb: 100, type: "gp3", encrypted: true }` for GPU types, 30 GB otherwise */
  readonly rootVolume?: { readonly sizeGb?: number | undefined; readonly type?: "gp3" | "gp2" | "io1" | "io2" | undefined; readonly iops?: number | undefined; readonly encrypted?: boolean | undefined } | undefined;
  /** How runctl reaches the instance. @defaultValue `{ kind: "ssh" }` with a key pair runctl makes */
  readonly access?: Ec2SshAccess | Ec2SsmAccess | undefined;
  /** IAM instance profile name (S3 access for checkpoints and data; SSM needs `AmazonSSMManagedInstanceCore`). @defaultValue none */
  readonly instanceProfile?: string | undefined;
  /** Security groups to use instead of creating one. @defaultValue a new group, tagged, deleted at release */
  readonly securityGroupIds?: readonly string[] | undefined;
  /**
   * Use this existing instance instead of launching one. runctl does not terminate what it did not
   * create unless `terminateOnRelease` says so.
   * @defaultValue none (launch a new instance)
   */
  readonly instanceId?: string | undefined;
  /** Terminate the instance at release. @defaultValue true for instances runctl launched, false for `instanceId` */
  readonly terminateOnRelease?: boolean | undefined;
  /**
   * How long after launch, and after each renewal, what runctl created for a run may be swept
   * (`runctl:expires-at`). A client following the run renews it every few minutes, and a sweep
   * never takes a run that looks alive unless forced.
   * @defaultValue the run's `.budget({ maxDurationMs })` plus 2 hours; 24 hours for a run without one
   */
  readonly ttlMs?: number | undefined;
  /** The `runctl:owner` tag. @defaultValue `user@host` of this process */
  readonly owner?: string | undefined;
  /** Extra tags on everything created (runctl's own tags win on a clash). @defaultValue `{}` */
  readonly tags?: Readonly<Record<string, string>> | undefined;
  /**
   * Price per hour for cost reports, budgets and `.plan()`: the escape for a type or region the
   * static catalog does not know. Without it such a price is unknown: `.plan()` says so (never $0) and
   * a run with `.budget({ maxUsd })` is refused with PRICE_UNKNOWN by both `.plan()` and `.train()`.
   * @defaultValue the spot market price (spot) or the catalog's on-demand price
   */
  readonly hourlyPriceUsd?: number | undefined;
  /** How long an instance may take to reach `running`. @defaultValue 600000 */
  readonly runningTimeoutMs?: number | undefined;
  /** How long a running instance may take to answer (SSH or SSM round trip). @defaultValue 600000 */
  readonly readyTimeoutMs?: number | undefined;
  /** First interval of state polling (grows to 15 s). @defaultValue 2000 */
  readonly pollMs?: number | undefined;
  /**
   * Once a run has ended, the instance powers itself off (and so terminates) after this long unless
   * released first: the backstop for a client that died. 0 turns it off.
   * @defaultValue 1800000 (30 minutes)
   */
  readonly shutdownAfterRunMs?: number | undefined;
  /** AWS clients to use (tests, custom credentials or endpoints). @defaultValue new clients for `region` that send once (`maxAttempts: 1`; runctl retries, see docs/decisions/0012-aws-retries.md) */
  readonly clients?: { readonly ec2?: EC2Client | undefined; readonly ssm?: SSMClient | undefined } | undefined;
  /** The instance metadata endpoint the agent polls for spot notices. @defaultValue `"http://169.254.169.254"` */
  readonly imdsEndpoint?: string | undefined;
  /**
   * A launched instance powers itself off (and so terminates) this long after its first boot
   * unless runctl's agent has started on it by then: the backstop for a client that dies between
   * launch and the run's start. Only for instances terminated at release; 0 turns it off.
   * Rounded up to whole minutes (`shutdown -h +N`).
   * @defaultValue `readyTimeoutMs` plus 30 minutes (40 minutes)
   */
  readonly unstartedPowerOffMs?: number | undefined;
  /** Python 3 on the instance. @defaultValue `"python3"` */
  readonly python?: string | undefined;
  /** Receives warnings (spot fell back to on-demand, a leftover that release could not delete). @defaultValue `process.emitWarning` */
  readonly onWarning?: ((message: string) => void) | undefined;
  /** Debug output of the instance's transport (SSH connects, commands, transfers; SSM commands) and of the agent. @defaultValue undefined (silent) */
  readonly logger?: RunctlLogger | undefined;
}

const cidr = lazySchema((z) => z.string().regex(/^(\d{1,3}\.){3}\d{1,3}\/(\d|[12]\d|3[0-2])$/, "a CIDR like 203.0.113.7/32"));
const schema = lazySchema((z) => z.strictObject({
  region: z.string().regex(/^[a-z]{2}(-gov)?-[a-z]+-\d$/, "an AWS region like us-east-1"),
  instanceType: z.string().regex(/^[a-z][a-z0-9-]*\.[a-z0-9]+$/, "an instance type like g5.xlarge").optional(),
  spot: z.union([z.boolean(), z.strictObject({ maxPriceUsd: z.number().positive().optional(), fallbackToOnDemand: z.boolean().optional() })]).optional(),
  availabilityZones: z.array(z.string().regex(/^[a-z]{2}(-gov)?-[a-z]+-\d[a-z]$/, "a zone like us-east-1a")).min(1).optional(),
  subnetIds: z.array(z.string().regex(/^subnet-[0-9a-f]{8,17}$/, "a subnet id")).min(1).optional(),
  ami: z.string().regex(/^ami-[0-9a-f]{8,17}$/, "an AMI id like ami-0123456789abcdef0").optional(),
  rootVolume: z
    .strictObject({ sizeGb: z.number().int().min(8).max(16_384).optional(), type: z.enum(["gp3", "gp2", "io1", "io2"]).optional(), iops: z.number().int().min(100).max(256_000).optional(), encrypted: z.boolean().optional() })
    .optional(),
  access: z
    .union([
      z.strictObject({ kind: z.literal("ssh"), keyPairName: z.string().min(1).max(255).optional(), privateKeyPath: z.string().min(1).optional(), allowSshFrom: cidr().optional(), username: z.string().regex(/^[a-z_][a-z0-9_-]*$/).optional(), usePrivateIp: z.boolean().optional() }),
      z.strictObject({ kind: z.literal("ssm"), staging: z.custom<Storage>((v) => typeof v === "object" && v !== null && typeof (v as Storage).put === "function", "a runctl S3 storage"), user: z.string().regex(/^[a-z_][a-z0-9_-]*$/).nullable().optional() }),
    ])
    .optional(),
  instanceProfile: z.string().regex(/^[\w+=,.@-]{1,128}$/, "an instance profile name").optional(),
  securityGroupIds: z.array(z.string().regex(/^sg-[0-9a-f]{8,17}$/, "a security group id")).min(1).optional(),
  instanceId: z.string().regex(/^i-[0-9a-f]{8,17}$/, "an instance id like i-0123456789abcdef0").optional(),
  terminateOnRelease: z.boolean().optional(),
  ttlMs: z.number().int().positive().optional(),
  owner: z.string().min(1).max(200).optional(),
  tags: z.record(z.string().min(1).max(127).refine((k) => !k.startsWith("aws:") && !k.startsWith("runctl:"), "tag keys may not start with aws: or runctl:"), z.string().max(255)).optional(),
  hourlyPriceUsd: z.number().nonnegative().optional(),
  runningTimeoutMs: z.number().int().positive().optional(),
  readyTimeoutMs: z.number().int().positive().optional(),
  pollMs: z.number().int().positive().optional(),
  shutdownAfterRunMs: z.number().int().nonnegative().optional(),
  unstartedPowerOffMs: z.number().int().nonnegative().optional(),
  clients: z.strictObject({ ec2: z.any().optional(), ssm: z.any().optional() }).optional(),
  imdsEndpoint: z.string().url().optional(),
  python: z.string().min(1).optional(),
  onWarning: z.custom<(m: string) => void>((v) => typeof v === "function").optional(),
  logger: z.custom<RunctlLogger>((v) => typeof v === "function" || (typeof v === "object" && v !== null), "a function or an object of level methods").optional(),
}));

/** Checks `ec2()` options; a RunctlError INVALID_ARGUMENT names every problem, before anything is created. */
export function validateEc2Options(options: Ec2ProviderOptions): Ec2ProviderOptions {
  const parsed = schema().safeParse(options);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join(".") || "options"}: ${i.message}`).join("; ");
    throw new RunctlError("INVALID_ARGUMENT", `ec2(): ${problems}.`);
  }
  if (options.instanceType === undefined && options.instanceId === undefined) throw new RunctlError("INVALID_ARGUMENT", "ec2(): give `instanceType` (launch) or `instanceId` (use an existing instance).");
  const access = options.access;
  if (access?.kind === "ssh" && (access.keyPairName === undefined) !== (access.privateKeyPath === undefined)) {
    throw new RunctlError("INVALID_ARGUMENT", "ec2(): access.keyPairName and access.privateKeyPath go together (runctl needs the private key of the key pair it launches with).");
  }
  if (options.instanceId !== undefined && access?.kind !== "ssm" && access?.privateKeyPath === undefined) {
    throw new RunctlError("INVALID_ARGUMENT", "ec2({ instanceId }): say how to reach it: access { kind: \"ssh\", keyPairName, privateKeyPath } or { kind: \"ssm\", staging }.");
  }
  if (access?.kind === "ssm" && options.instanceProfile === undefined && options.instanceId === undefined) {
    throw new RunctlError("INVALID_ARGUMENT", "ec2(): SSM access needs `instanceProfile` (a role with AmazonSSMManagedInstanceCore and access to the staging bucket).");
  }
  const root = options.rootVolume;
  if (root?.iops !== undefined && root.type !== "io1" && root.type !== "io2" && root.type !== "gp3" && root.type !== undefined) {
    throw new RunctlError("INVALID_ARGUMENT", `ec2(): rootVolume.iops applies to gp3, io1 and io2 volumes, not ${root.type}.`);
  }
  return options;
}
