import type { EC2Client } from "@aws-sdk/client-ec2";
import type { PollOptions } from "../../../aws/aws-poll.js";
import type { AwsRetryOptions } from "../../../aws/aws-call.js";
import type { EbsAttachResult, EbsDeleteResult, EbsDetachResult, EbsSnapshot, EbsVolume, EbsVolumeType } from "./ebs-types.js";

/**
 * Options of {@link ebsVolumes}.
 *
 * @example
 * ```ts
 * const volumes = ebsVolumes({ region: "us-east-1", onWarning: (m) => console.warn(m) });
 * ```
 */
export interface EbsVolumesOptions {
  /** The AWS region of the volumes. */
  readonly region: string;
  /** The EC2 client to use. @defaultValue `new EC2Client({ region, maxAttempts: AWS_SDK_MAX_ATTEMPTS })` (the standard credential chain) */
  readonly client?: EC2Client | undefined;
  /** The `runctl:owner` tag of what this creates. @defaultValue `defaultOwner()` (`user@host`) */
  readonly owner?: string | undefined;
  /** Called with things worth knowing that do not fail the call. @defaultValue ignore them */
  readonly onWarning?: ((message: string) => void) | undefined;
  /** Repeats of throttled or 5xx EC2 calls. @defaultValue `{ retries: 5, minDelayMs: 250, maxDelayMs: 8000 }` */
  readonly retry?: AwsRetryOptions | undefined;
  /** Pauses between checks while waiting. @defaultValue `{ initialMs: 1000, maxMs: 15000 }` */
  readonly poll?: PollOptions | undefined;
}

/**
 * Options of {@link EbsVolumes.create}.
 *
 * @example
 * ```ts
 * await volumes.create({ sizeGb: 500, type: "gp3", iops: 6000, throughputMiBps: 500, availabilityZone: "us-east-1b", runId: run.runId });
 * ```
 */
export interface CreateEbsVolumeOptions {
  /** Size in GiB (gp3/gp2 1–65,536/16,384; io1 4–16,384; io2 4–65,536; st1/sc1 125–16,384). Optional only with `snapshotId`. */
  readonly sizeGb?: number | undefined;
  /** Volume type. @defaultValue `"gp3"` */
  readonly type?: EbsVolumeType | undefined;
  /** Provisioned IOPS (gp3 3,000–80,000; io1 100–64,000; io2 100–256,000; required for io1/io2). @defaultValue EC2's baseline (3,000 on gp3) */
  readonly iops?: number | undefined;
  /** Provisioned throughput in MiB/s, gp3 only (125–2,000, at most 0.25 per IOPS). @defaultValue 125 */
  readonly throughputMiBps?: number | undefined;
  /** Encrypt the volume. @defaultValue the account's EBS encryption-by-default setting */
  readonly encrypted?: boolean | undefined;
  /** The KMS key for encryption (needs `encrypted: true`). @defaultValue the account's EBS key */
  readonly kmsKeyId?: string | undefined;
  /** The zone to create it in: the zone of the instance it will attach to. Required; never guessed. */
  readonly availabilityZone: string;
  /** Keep it beyond runs: tagged `runctl:persistent=true`, no `runctl:expires-at`; never swept, deleted only with `force`. @defaultValue false */
  readonly persistent?: boolean | undefined;
  /** Its `Name` tag. @defaultValue `runctl-<runId>` or `runctl-vol-<random>` */
  readonly name?: string | undefined;
  /** The run it belongs to (`runctl:run-id`); it is swept once that run is over. @defaultValue `volume:<name>` */
  readonly runId?: string | undefined;
  /** When it may be swept, from now (`runctl:expires-at`). Not with `persistent`. @defaultValue one day */
  readonly ttlMs?: number | undefined;
  /** Restore this snapshot into the new volume. */
  readonly snapshotId?: string | undefined;
  /** Extra tags (runctl's own tags win on a clash). @defaultValue `{}` */
  readonly tags?: Readonly<Record<string, string>> | undefined;
  /** Aborts the call with ABORTED. */
  readonly signal?: AbortSignal | undefined;
}

/**
 * Options of {@link EbsVolumes.restore}: those of `create` without `snapshotId`; the size defaults to the snapshot's.
 *
 * @example
 * ```ts
 * await volumes.restore("snap-0123456789abcdef0", { availabilityZone: "us-east-1c", sizeGb: 200 });
 * ```
 */
export type RestoreEbsSnapshotOptions = Omit<CreateEbsVolumeOptions, "snapshotId">;

/**
 * Options of the waits ({@link EbsVolumes.waitFor}, {@link EbsVolumes.waitForSnapshot}).
 *
 * @example
 * ```ts
 * await volumes.waitFor("vol-0123456789abcdef0", "available", { timeoutMs: 120_000, signal });
 * ```
 */
export interface EbsWaitOptions {
  /** Give up with PROVISION_TIMEOUT after this long. @defaultValue 300000 (volumes), 3600000 (snapshots) */
  readonly timeoutMs?: number | undefined;
  /** Aborts the wait with ABORTED. */
  readonly signal?: AbortSignal | undefined;
}

/**
 * Options of {@link EbsVolumes.attach}.
 *
 * @example
 * ```ts
 * await volumes.attach("vol-0123456789abcdef0", "i-0123456789abcdef0", { device: "/dev/sdg" });
 * ```
 */
export interface AttachEbsVolumeOptions extends EbsWaitOptions {
  /** The device name to attach it as. @defaultValue `"/dev/sdf"` */
  readonly device?: string | undefined;
  /** Wait until EC2 reports it `attached` (and wait first for a volume still `creating`). @defaultValue true */
  readonly wait?: boolean | undefined;
}

/**
 * Options of {@link EbsVolumes.detach}.
 *
 * @example
 * ```ts
 * await volumes.detach("vol-0123456789abcdef0", { timeoutMs: 120_000 });
 * ```
 */
export interface DetachEbsVolumeOptions extends EbsWaitOptions {
  /** Force the detach (the OS gets no chance to flush: unmount first). @defaultValue false */
  readonly force?: boolean | undefined;
  /** Wait until the volume is `available` again. @defaultValue true */
  readonly wait?: boolean | undefined;
}

/**
 * Options of {@link EbsVolumes.snapshot}.
 *
 * @example
 * ```ts
 * await volumes.snapshot("vol-0123456789abcdef0", { description: "imagenet v2", persistent: true });
 * ```
 */
export interface SnapshotEbsVolumeOptions {
  /** The snapshot's description. @defaultValue `"runctl snapshot of <volumeId>"` */
  readonly description?: string | undefined;
  /** Keep it beyond runs (no `runctl:expires-at`; deleted only with `force`). @defaultValue false */
  readonly persistent?: boolean | undefined;
  /** Its `Name` tag. @defaultValue the volume's name, else `runctl-snap-<volumeId>` */
  readonly name?: string | undefined;
  /** Its `runctl:run-id` tag. @defaultValue the volume's, else `volume:<volumeId>` */
  readonly runId?: string | undefined;
  /** When it may be swept, from now. Not with `persistent`. @defaultValue one week */
  readonly ttlMs?: number | undefined;
  /** Extra tags. @defaultValue `{}` */
  readonly tags?: Readonly<Record<string, string>> | undefined;
  /** Aborts the call with ABORTED. */
  readonly signal?: AbortSignal | undefined;
}

/**
 * Options of {@link EbsVolumes.delete} and {@link EbsVolumes.deleteSnapshot}.
 *
 * @example
 * ```ts
 * await volumes.delete("vol-0123456789abcdef0", { force: true });
 * ```
 */
export interface DeleteEbsOptions extends EbsWaitOptions {
  /** Delete a persistent volume or snapshot, and detach an attached volume first (forced). @defaultValue false */
  readonly force?: boolean | undefined;
}

/**
 * Options of {@link EbsVolumes.list}.
 *
 * @example
 * ```ts
 * await volumes.list({ owner: "alice@laptop" });
 * ```
 */
export interface ListEbsVolumesOptions {
  /** Only volumes with this `runctl:owner`; `"all"` for every owner. @defaultValue `"all"` */
  readonly owner?: string | undefined;
  /** Aborts the call with ABORTED. */
  readonly signal?: AbortSignal | undefined;
}

/**
 * runctl's EBS volumes in one region: create (tagged at creation), attach, wait, detach, snapshot,
 * restore, delete, list. Every call validates its input before any AWS call, repeats throttled
 * calls, takes an AbortSignal, and records what it creates and deletes in the local resource ledger.
 * Mount the attached volume on the machine with {@link mountVolume}.
 *
 * @example
 * ```ts
 * const volumes = ebsVolumes({ region: "us-east-1" });
 * const az = await volumes.availabilityZoneOf("i-0123456789abcdef0");
 * const vol = await volumes.create({ sizeGb: 200, type: "gp3", availabilityZone: az, persistent: true, name: "imagenet" });
 * await volumes.waitFor(vol.volumeId, "available", { timeoutMs: 300_000 });
 * await volumes.attach(vol.volumeId, "i-0123456789abcdef0");
 * ```
 */
export interface EbsVolumes {
  /** The region of these volumes. */
  readonly region: string;
  /** Creates a volume (state `creating`; see {@link EbsVolumes.waitFor}). */
  create(options: CreateEbsVolumeOptions): Promise<EbsVolume>;
  /** What EC2 says about a volume, or undefined when it does not exist. */
  describe(volumeId: string, options?: { readonly signal?: AbortSignal | undefined }): Promise<EbsVolume | undefined>;
  /** Waits until the volume is `available`, or `in-use` with an `attached` attachment. */
  waitFor(volumeId: string, state: "available" | "in-use", options?: EbsWaitOptions): Promise<EbsVolume>;
  /** Attaches a volume to an instance in the same zone. RESOURCE_IN_USE when attached elsewhere. */
  attach(volumeId: string, instanceId: string, options?: AttachEbsVolumeOptions): Promise<EbsAttachResult>;
  /** Detaches a volume (a no-op when it is not attached). Unmount it first. */
  detach(volumeId: string, options?: DetachEbsVolumeOptions): Promise<EbsDetachResult>;
  /** Starts a snapshot of a volume, tagged at creation (state `pending`; see {@link EbsVolumes.waitForSnapshot}). */
  snapshot(volumeId: string, options?: SnapshotEbsVolumeOptions): Promise<EbsSnapshot>;
  /** Waits until a snapshot is `completed`. */
  waitForSnapshot(snapshotId: string, options?: EbsWaitOptions): Promise<EbsSnapshot>;
  /** Creates a volume from a snapshot (at least the snapshot's size). */
  restore(snapshotId: string, options: RestoreEbsSnapshotOptions): Promise<EbsVolume>;
  /** Deletes a volume; RESOURCE_IN_USE for a persistent or attached one unless `force`. */
  delete(volumeId: string, options?: DeleteEbsOptions): Promise<EbsDeleteResult>;
  /** Deletes a snapshot; RESOURCE_IN_USE for a persistent one unless `force`. */
  deleteSnapshot(snapshotId: string, options?: DeleteEbsOptions): Promise<EbsDeleteResult>;
  /** Every runctl-tagged volume in the region (all pages). */
  list(options?: ListEbsVolumesOptions): Promise<EbsVolume[]>;
  /** The Availability Zone of an instance: where its volumes must be created. */
  availabilityZoneOf(instanceId: string, options?: { readonly signal?: AbortSignal | undefined }): Promise<string>;
}
