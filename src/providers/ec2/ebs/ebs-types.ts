/**
 * EBS volume types runctl creates. `gp3` is the sensible default for training data.
 *
 * @example
 * ```ts
 * const type: EbsVolumeType = "io2";
 * ```
 */
export type EbsVolumeType = "gp3" | "gp2" | "io1" | "io2" | "st1" | "sc1";

/**
 * Every volume type runctl accepts, in the order of {@link EbsVolumeType}.
 *
 * @example
 * ```ts
 * EBS_VOLUME_TYPES.includes("gp3"); // true
 * ```
 */
export const EBS_VOLUME_TYPES: readonly EbsVolumeType[] = ["gp3", "gp2", "io1", "io2", "st1", "sc1"];

/**
 * A volume's state, as EC2 spells it (lowercase: `available`, never `Available`).
 *
 * @example
 * ```ts
 * if (volume.state === "in-use") console.log(volume.attachments[0]?.instanceId);
 * ```
 */
export type EbsVolumeState = "creating" | "available" | "in-use" | "deleting" | "deleted" | "error";

/**
 * One attachment of a volume to an instance.
 *
 * @example
 * ```ts
 * for (const a of volume.attachments) console.log(a.instanceId, a.device, a.state);
 * ```
 */
export interface EbsAttachment {
  /** The instance it is attached to. */
  readonly instanceId: string;
  /** The device name it was attached as (`/dev/sdf`); on Nitro the kernel calls it `/dev/nvmeXn1`. */
  readonly device: string;
  /** `attaching`, `attached`, `detaching`, `detached` or `busy`. */
  readonly state: string;
  /** Whether EC2 deletes the volume when the instance terminates. */
  readonly deleteOnTermination: boolean;
}

/**
 * What EC2 says about a volume.
 *
 * @example
 * ```ts
 * const v = await volumes.describe("vol-0123456789abcdef0");
 * if (v?.state === "available" && !v.persistent) await volumes.delete(v.volumeId);
 * ```
 */
export interface EbsVolume {
  /** `vol-…`. */
  readonly volumeId: string;
  /** Its state, lowercase as EC2 reports it. */
  readonly state: EbsVolumeState;
  /** Size in GiB. */
  readonly sizeGb: number;
  /** Volume type (`gp3`, …). */
  readonly type: string;
  /** Provisioned IOPS (gp3, io1, io2; the baseline for gp2). */
  readonly iops?: number | undefined;
  /** Provisioned throughput in MiB/s (gp3). */
  readonly throughputMiBps?: number | undefined;
  /** Whether it is encrypted. */
  readonly encrypted: boolean;
  /** Its Availability Zone; it can only be attached to instances there. */
  readonly availabilityZone: string;
  /** The snapshot it was restored from. */
  readonly snapshotId?: string | undefined;
  /** When EC2 created it. */
  readonly createdAt?: Date | undefined;
  /** Current attachments (at most one unless Multi-Attach). */
  readonly attachments: readonly EbsAttachment[];
  /** All its tags. */
  readonly tags: Readonly<Record<string, string>>;
  /** Its `runctl:run-id` tag; absent on volumes runctl did not create. */
  readonly runId?: string | undefined;
  /** Tagged `runctl:persistent=true`: it outlives runs and is never swept or deleted without force. */
  readonly persistent: boolean;
  /** Its `Name` tag. */
  readonly name?: string | undefined;
}

/**
 * A snapshot's state, as EC2 spells it.
 *
 * @example
 * ```ts
 * if (snapshot.state === "completed") await volumes.restore(snapshot.snapshotId, { availabilityZone: "us-east-1a" });
 * ```
 */
export type EbsSnapshotState = "pending" | "completed" | "error" | "recoverable" | "recovering";

/**
 * What EC2 says about a snapshot.
 *
 * @example
 * ```ts
 * const snap = await volumes.snapshot("vol-0123456789abcdef0", { description: "mnist cache" });
 * await volumes.waitForSnapshot(snap.snapshotId, { timeoutMs: 3_600_000 });
 * ```
 */
export interface EbsSnapshot {
  /** `snap-…`. */
  readonly snapshotId: string;
  /** The volume it was taken from. */
  readonly volumeId: string;
  /** Its state, lowercase as EC2 reports it. */
  readonly state: EbsSnapshotState;
  /** Progress as EC2 reports it (`"42%"`). */
  readonly progress?: string | undefined;
  /** Size of the source volume in GiB: the smallest volume it can be restored to. */
  readonly sizeGb: number;
  /** Whether it is encrypted (volumes restored from it are too). */
  readonly encrypted: boolean;
  /** When it was started. */
  readonly startedAt?: Date | undefined;
  /** Its description. */
  readonly description?: string | undefined;
  /** All its tags. */
  readonly tags: Readonly<Record<string, string>>;
  /** Its `runctl:run-id` tag. */
  readonly runId?: string | undefined;
  /** Tagged `runctl:persistent=true`. */
  readonly persistent: boolean;
}

/**
 * Outcome of {@link EbsVolumes.attach}.
 *
 * @example
 * ```ts
 * const { device, state } = await volumes.attach("vol-0123456789abcdef0", "i-0123456789abcdef0");
 * ```
 */
export interface EbsAttachResult {
  readonly volumeId: string;
  readonly instanceId: string;
  /** The device name it was attached as. */
  readonly device: string;
  /** `attached` when the call waited (the default), else what EC2 answered (`attaching`). */
  readonly state: string;
  /** It was already attached to that instance: nothing was done. */
  readonly alreadyAttached: boolean;
}

/**
 * Outcome of {@link EbsVolumes.detach}.
 *
 * @example
 * ```ts
 * const { detached } = await volumes.detach("vol-0123456789abcdef0");
 * ```
 */
export interface EbsDetachResult {
  readonly volumeId: string;
  /** The instance it was detached from; absent when it was not attached. */
  readonly instanceId?: string | undefined;
  /** The volume's state afterwards (`available` when the call waited, the default). */
  readonly state: string;
  /** Whether this call detached it (false: it was not attached; nothing was done). */
  readonly detached: boolean;
}

/**
 * Outcome of {@link EbsVolumes.delete} and {@link EbsVolumes.deleteSnapshot}.
 *
 * @example
 * ```ts
 * const { deleted } = await volumes.delete("vol-0123456789abcdef0");
 * ```
 */
export interface EbsDeleteResult {
  /** The volume or snapshot id. */
  readonly id: string;
  /** True when this call deleted it; false when it was already gone. */
  readonly deleted: boolean;
  /** It was attached and `force` detached it first. */
  readonly detached: boolean;
}

/**
 * Outcome of {@link mountVolume}.
 *
 * @example
 * ```ts
 * const { device, formatted, fsType } = await mountVolume(transport, { volumeId, mountPoint: "/mnt/data" });
 * ```
 */
export interface MountVolumeResult {
  /** The block device found for the volume, resolved (`/dev/nvme1n1`, `/dev/xvdf`). */
  readonly device: string;
  /** Whether this call made the filesystem (it only does on a blank volume). */
  readonly formatted: boolean;
  /** The filesystem mounted (the one found on the volume, which may differ from the one asked for). */
  readonly fsType: string;
  /** Where it is mounted. */
  readonly mountPoint: string;
  /** It was already mounted there: nothing was done. */
  readonly alreadyMounted: boolean;
}

/**
 * Outcome of {@link prewarmVolume}.
 *
 * @example
 * ```ts
 * const { files, bytes } = await prewarmVolume(transport, { source: "s3://ml-data/mnist", mountPoint: "/mnt/data" });
 * ```
 */
export interface PrewarmVolumeResult {
  /** Objects under the source prefix, each verified present on the volume with its size. */
  readonly files: number;
  /** Their total size in bytes. */
  readonly bytes: number;
  /** The folder on the machine they are in. */
  readonly path: string;
  /** Wall time of the copy and the check. */
  readonly durationMs: number;
}
