import type { Snapshot, Volume } from "@aws-sdk/client-ec2";
import { RunctlError } from "../../../errors/runctl-error.js";
import { TAG, fromAwsTags } from "../tags.js";
import type { EbsSnapshot, EbsSnapshotState, EbsVolume, EbsVolumeState } from "./ebs-types.js";

/**
 * Turns EC2's volume shape into an {@link EbsVolume}.
 *
 * @example
 * ```ts
 * const v = toEbsVolume({ VolumeId: "vol-0123456789abcdef0", State: "available", Size: 10 });
 * ```
 */
export function toEbsVolume(v: Volume): EbsVolume {
  if (!v.VolumeId) throw new RunctlError("CLOUD_ERROR", "EC2 returned a volume without an id.");
  const tags = fromAwsTags(v.Tags);
  const runId = tags[TAG.runId];
  const name = tags[TAG.name];
  return {
    volumeId: v.VolumeId,
    state: (v.State ?? "error") as EbsVolumeState,
    sizeGb: v.Size ?? 0,
    type: v.VolumeType ?? "unknown",
    ...(v.Iops !== undefined ? { iops: v.Iops } : {}),
    ...(v.Throughput !== undefined ? { throughputMiBps: v.Throughput } : {}),
    encrypted: v.Encrypted ?? false,
    availabilityZone: v.AvailabilityZone ?? "",
    ...(v.SnapshotId ? { snapshotId: v.SnapshotId } : {}),
    ...(v.CreateTime ? { createdAt: v.CreateTime } : {}),
    attachments: (v.Attachments ?? []).map((a) => ({
      instanceId: a.InstanceId ?? "",
      device: a.Device ?? "",
      state: a.State ?? "",
      deleteOnTermination: a.DeleteOnTermination ?? false,
    })),
    tags,
    ...(runId !== undefined ? { runId } : {}),
    persistent: tags[TAG.persistent] === "true",
    ...(name !== undefined ? { name } : {}),
  };
}

/**
 * Turns EC2's snapshot shape into an {@link EbsSnapshot}.
 *
 * @example
 * ```ts
 * const s = toEbsSnapshot({ SnapshotId: "snap-0123456789abcdef0", State: "completed", VolumeSize: 10 });
 * ```
 */
export function toEbsSnapshot(s: Snapshot): EbsSnapshot {
  if (!s.SnapshotId) throw new RunctlError("CLOUD_ERROR", "EC2 returned a snapshot without an id.");
  const tags = fromAwsTags(s.Tags);
  const runId = tags[TAG.runId];
  return {
    snapshotId: s.SnapshotId,
    volumeId: s.VolumeId ?? "",
    state: (s.State ?? "error") as EbsSnapshotState,
    ...(s.Progress !== undefined ? { progress: s.Progress } : {}),
    sizeGb: s.VolumeSize ?? 0,
    encrypted: s.Encrypted ?? false,
    ...(s.StartTime ? { startedAt: s.StartTime } : {}),
    ...(s.Description !== undefined ? { description: s.Description } : {}),
    tags,
    ...(runId !== undefined ? { runId } : {}),
    persistent: tags[TAG.persistent] === "true",
  };
}

/** INVALID_ARGUMENT unless `tags` are valid extra tags (no `runctl:` keys). */
export function checkExtraTags(tags: Readonly<Record<string, string>> | undefined): void {
  for (const [key, value] of Object.entries(tags ?? {})) {
    if (key === "" || key.length > 128 || key.toLowerCase().startsWith("aws:")) {
      throw new RunctlError("INVALID_ARGUMENT", `Tag key ${JSON.stringify(key)} is not allowed: 1–128 characters, not starting with "aws:".`);
    }
    if (typeof value !== "string" || value.length > 256) throw new RunctlError("INVALID_ARGUMENT", `Tag ${key} must have a string value of at most 256 characters.`);
  }
}

/** A wait's timeout, validated, or `fallback`. */
export function checkTimeout(timeoutMs: number | undefined, fallback: number): number {
  const value = timeoutMs ?? fallback;
  if (!Number.isFinite(value) || value < 0) throw new RunctlError("INVALID_ARGUMENT", `timeoutMs must be a finite number >= 0, got ${String(timeoutMs)}.`);
  return value;
}
