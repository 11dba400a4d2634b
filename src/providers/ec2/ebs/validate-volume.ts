import { RunctlError } from "../../../errors/runctl-error.js";
import { EBS_VOLUME_TYPES, type EbsVolumeType } from "./ebs-types.js";

/** Limits of one volume type, from the EC2 CreateVolume reference (SDK 3.1169). */
interface TypeLimits {
  readonly sizeGb: readonly [number, number];
  /** Provisioned IOPS range; absent: IOPS cannot be set for this type. */
  readonly iops?: readonly [number, number] | undefined;
  /** Whether IOPS must be given (io1, io2). */
  readonly iopsRequired?: boolean | undefined;
  /** Highest IOPS per GiB of size. */
  readonly iopsPerGb?: number | undefined;
  /** Provisioned throughput range in MiB/s; absent: throughput cannot be set. */
  readonly throughputMiBps?: readonly [number, number] | undefined;
}

/**
 * Size, IOPS and throughput limits per type. gp3: IOPS 3,000–80,000 (≤ 500 per GiB above the
 * 3,000 baseline), throughput 125–2,000 MiB/s (≤ 0.25 MiB/s per IOPS); io1: 100–64,000 IOPS, ≤ 50 per
 * GiB; io2: 100–256,000 IOPS, ≤ 1,000 per GiB. Checked before any call so a bad combination fails
 * with a precise message instead of an `InvalidParameterCombination` from EC2 after a round trip.
 *
 * @example
 * ```ts
 * EBS_LIMITS.gp3.iops; // [3000, 80000]
 * ```
 */
export const EBS_LIMITS: Readonly<Record<EbsVolumeType, TypeLimits>> = {
  gp3: { sizeGb: [1, 65_536], iops: [3_000, 80_000], iopsPerGb: 500, throughputMiBps: [125, 2_000] },
  gp2: { sizeGb: [1, 16_384] },
  io1: { sizeGb: [4, 16_384], iops: [100, 64_000], iopsRequired: true, iopsPerGb: 50 },
  io2: { sizeGb: [4, 65_536], iops: [100, 256_000], iopsRequired: true, iopsPerGb: 1_000 },
  st1: { sizeGb: [125, 16_384] },
  sc1: { sizeGb: [125, 16_384] },
};

/** gp3's baseline IOPS (what a gp3 volume gets when none are asked for). */
const GP3_BASELINE_IOPS = 3_000;
/** gp3's highest throughput per provisioned IOPS. */
const GP3_MIBPS_PER_IOPS = 0.25;

function invalid(message: string): RunctlError {
  return new RunctlError("INVALID_ARGUMENT", message);
}

function checkInt(name: string, value: number, [min, max]: readonly [number, number], what: string): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw invalid(`${name} must be a whole number from ${min.toLocaleString("en-US")} to ${max.toLocaleString("en-US")} for ${what}, got ${String(value)}.`);
  }
}

/**
 * Checks an AWS region name (`us-east-1`, `eu-central-2`, `us-gov-west-1`).
 *
 * @example
 * ```ts
 * validateRegion("us-east-1");
 * ```
 */
export function validateRegion(region: unknown): string {
  if (typeof region !== "string" || !/^[a-z]{2,4}(-[a-z]+)+-\d+$/.test(region)) {
    throw invalid(`region must be an AWS region such as "us-east-1", got ${JSON.stringify(region)}.`);
  }
  return region;
}

/**
 * Checks an Availability Zone name and that it lies in `region` (`us-east-1a`, or a Local Zone such
 * as `us-west-2-lax-1a`). There is no default: runctl never guesses `<region>a`, let alone the
 * invalid `<region>-1a`; take it from the instance the volume is for (`availabilityZoneOf`).
 *
 * @example
 * ```ts
 * validateAvailabilityZone("us-east-1b", "us-east-1");
 * ```
 */
export function validateAvailabilityZone(az: unknown, region: string): string {
  if (typeof az !== "string" || az === "") {
    throw invalid(`availabilityZone is required (a volume lives in one zone and attaches only to instances there); pass the zone of the instance it is for, e.g. from availabilityZoneOf(instanceId).`);
  }
  const rest = az.startsWith(region) ? az.slice(region.length) : undefined;
  if (rest === undefined || !/^([a-z]|-[a-z][a-z0-9-]*[a-z0-9])$/.test(rest)) {
    throw invalid(`availabilityZone ${JSON.stringify(az)} is not a zone of region ${region} (zones look like "${region}a").`);
  }
  return az;
}

function checkId(kind: string, prefix: string, id: unknown): string {
  if (typeof id !== "string" || !new RegExp(`^${prefix}-([0-9a-f]{8}|[0-9a-f]{17})$`).test(id)) {
    throw invalid(`${kind} must look like "${prefix}-0123456789abcdef0", got ${JSON.stringify(id)}.`);
  }
  return id;
}

/**
 * Checks an EBS volume id (`vol-` and 8 or 17 hex digits).
 *
 * @example
 * ```ts
 * validateVolumeId("vol-0123456789abcdef0");
 * ```
 */
export function validateVolumeId(id: unknown): string {
  return checkId("volumeId", "vol", id);
}

/**
 * Checks an EBS snapshot id (`snap-` and 8 or 17 hex digits).
 *
 * @example
 * ```ts
 * validateSnapshotId("snap-0123456789abcdef0");
 * ```
 */
export function validateSnapshotId(id: unknown): string {
  return checkId("snapshotId", "snap", id);
}

/**
 * Checks an EC2 instance id (`i-` and 8 or 17 hex digits).
 *
 * @example
 * ```ts
 * validateInstanceId("i-0123456789abcdef0");
 * ```
 */
export function validateInstanceId(id: unknown): string {
  return checkId("instanceId", "i", id);
}

/**
 * Checks a device name to attach a volume as (`/dev/sdf` … `/dev/sdp`, or `/dev/xvdf`…).
 *
 * @example
 * ```ts
 * validateDeviceName("/dev/sdf");
 * ```
 */
export function validateDeviceName(device: unknown): string {
  if (typeof device !== "string" || !/^\/dev\/(sd|xvd)[b-z][a-z]?$/.test(device)) {
    throw invalid(`device must be a name such as "/dev/sdf" (sdb–sdz, xvdb–xvdz), got ${JSON.stringify(device)}.`);
  }
  return device;
}

/**
 * What {@link validateVolumeSpec} checks.
 *
 * @example
 * ```ts
 * const input: VolumeSpecInput = { type: "io2", sizeGb: 100, iops: 20_000 };
 * ```
 */
export interface VolumeSpecInput {
  readonly type?: unknown;
  readonly sizeGb?: unknown;
  readonly iops?: unknown;
  readonly throughputMiBps?: unknown;
  readonly encrypted?: unknown;
  readonly kmsKeyId?: unknown;
  readonly snapshotId?: unknown;
}

/**
 * A checked volume spec.
 *
 * @example
 * ```ts
 * const spec: VolumeSpec = validateVolumeSpec({ sizeGb: 50 }); // { type: "gp3", sizeGb: 50 }
 * ```
 */
export interface VolumeSpec {
  readonly type: EbsVolumeType;
  /** Absent only when restoring from a snapshot (its size is used). */
  readonly sizeGb?: number | undefined;
  readonly iops?: number | undefined;
  readonly throughputMiBps?: number | undefined;
  readonly encrypted?: boolean | undefined;
  readonly kmsKeyId?: string | undefined;
  readonly snapshotId?: string | undefined;
}

/**
 * Checks a volume's type, size, IOPS, throughput and encryption against EC2's limits (see
 * {@link EBS_LIMITS}), before any call: IOPS only for gp3/io1/io2 (required for io1/io2), throughput
 * only for gp3, size in the type's range (or omitted when restoring a snapshot), `kmsKeyId` only
 * with `encrypted: true`.
 *
 * @defaultValue type `"gp3"`
 * @example
 * ```ts
 * validateVolumeSpec({ type: "gp3", sizeGb: 100, iops: 6000, throughputMiBps: 500 });
 * ```
 */
export function validateVolumeSpec(input: VolumeSpecInput): VolumeSpec {
  const type = input.type ?? "gp3";
  if (typeof type !== "string" || !(EBS_VOLUME_TYPES as readonly string[]).includes(type)) {
    throw invalid(`type must be one of ${EBS_VOLUME_TYPES.join(", ")}, got ${JSON.stringify(type)}.`);
  }
  const t = type as EbsVolumeType;
  const limits = EBS_LIMITS[t];
  const snapshotId = input.snapshotId === undefined ? undefined : validateSnapshotId(input.snapshotId);

  let sizeGb: number | undefined;
  if (input.sizeGb === undefined) {
    if (snapshotId === undefined) throw invalid(`sizeGb is required (from ${limits.sizeGb[0]} to ${limits.sizeGb[1].toLocaleString("en-US")} GiB for ${t}) unless restoring a snapshot.`);
  } else {
    if (typeof input.sizeGb !== "number") throw invalid(`sizeGb must be a number of GiB, got ${JSON.stringify(input.sizeGb)}.`);
    checkInt("sizeGb", input.sizeGb, limits.sizeGb, `${t} volumes`);
    sizeGb = input.sizeGb;
  }

  let iops: number | undefined;
  if (input.iops !== undefined) {
    if (!limits.iops) throw invalid(`iops can only be set for gp3, io1 and io2 volumes, not ${t}.`);
    if (typeof input.iops !== "number") throw invalid(`iops must be a number, got ${JSON.stringify(input.iops)}.`);
    checkInt("iops", input.iops, limits.iops, `${t} volumes`);
    iops = input.iops;
    if (sizeGb !== undefined && limits.iopsPerGb !== undefined) {
      const max = Math.max(t === "gp3" ? GP3_BASELINE_IOPS : 0, limits.iopsPerGb * sizeGb);
      if (iops > max) throw invalid(`iops ${iops} is too many for a ${sizeGb} GiB ${t} volume: at most ${limits.iopsPerGb} per GiB (${max}); make it larger or ask for fewer IOPS.`);
    }
  } else if (limits.iopsRequired) {
    throw invalid(`iops is required for ${t} volumes (${limits.iops![0]}–${limits.iops![1].toLocaleString("en-US")}).`);
  }

  let throughputMiBps: number | undefined;
  if (input.throughputMiBps !== undefined) {
    if (!limits.throughputMiBps) throw invalid(`throughputMiBps can only be set for gp3 volumes, not ${t}.`);
    if (typeof input.throughputMiBps !== "number") throw invalid(`throughputMiBps must be a number, got ${JSON.stringify(input.throughputMiBps)}.`);
    checkInt("throughputMiBps", input.throughputMiBps, limits.throughputMiBps, `${t} volumes`);
    throughputMiBps = input.throughputMiBps;
    const effectiveIops = iops ?? GP3_BASELINE_IOPS;
    if (throughputMiBps > effectiveIops * GP3_MIBPS_PER_IOPS) {
      throw invalid(
        `throughputMiBps ${throughputMiBps} needs at least ${Math.ceil(throughputMiBps / GP3_MIBPS_PER_IOPS)} IOPS on gp3 (at most ${GP3_MIBPS_PER_IOPS} MiB/s per IOPS; this volume has ${effectiveIops}).`,
      );
    }
  }

  if (input.encrypted !== undefined && typeof input.encrypted !== "boolean") throw invalid(`encrypted must be true or false, got ${JSON.stringify(input.encrypted)}.`);
  let kmsKeyId: string | undefined;
  if (input.kmsKeyId !== undefined) {
    if (typeof input.kmsKeyId !== "string" || input.kmsKeyId === "") throw invalid(`kmsKeyId must be a KMS key id, alias or ARN, got ${JSON.stringify(input.kmsKeyId)}.`);
    if (input.encrypted !== true) throw invalid(`kmsKeyId needs encrypted: true (EC2 rejects a key for an unencrypted volume).`);
    kmsKeyId = input.kmsKeyId;
  }

  return {
    type: t,
    ...(sizeGb !== undefined ? { sizeGb } : {}),
    ...(iops !== undefined ? { iops } : {}),
    ...(throughputMiBps !== undefined ? { throughputMiBps } : {}),
    ...(typeof input.encrypted === "boolean" ? { encrypted: input.encrypted } : {}),
    ...(kmsKeyId !== undefined ? { kmsKeyId } : {}),
    ...(snapshotId !== undefined ? { snapshotId } : {}),
  };
}

/**
 * Checks a tag value runctl writes (`Name`, run id): 1–255 characters (EC2's limit is 256).
 *
 * @example
 * ```ts
 * validateTagValue("name", "mnist-cache");
 * ```
 */
export function validateTagValue(what: string, value: unknown): string {
  if (typeof value !== "string" || value.length === 0 || value.length > 255) {
    throw invalid(`${what} must be a string of 1 to 255 characters, got ${JSON.stringify(value)}.`);
  }
  return value;
}

/**
 * Checks a time-to-live in milliseconds (a whole positive number).
 *
 * @example
 * ```ts
 * validateTtlMs(86_400_000);
 * ```
 */
export function validateTtlMs(ttlMs: unknown): number {
  if (typeof ttlMs !== "number" || !Number.isFinite(ttlMs) || ttlMs <= 0) throw invalid(`ttlMs must be a positive number of milliseconds, got ${String(ttlMs)}.`);
  return ttlMs;
}
