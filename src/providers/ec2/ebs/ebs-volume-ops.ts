import { randomUUID } from "node:crypto";
import { CreateVolumeCommand, DeleteVolumeCommand, DescribeVolumesCommand, type Snapshot } from "@aws-sdk/client-ec2";
import { RunctlError } from "../../../errors/runctl-error.js";
import { TAG, runctlTags, toAwsTags, validateRunIdTag } from "../tags.js";
import { awsCall } from "../../../aws/aws-call.js";
import { awsErrorCode } from "../../../aws/aws-errors.js";
import type { EbsDeleteResult, EbsVolume } from "./ebs-types.js";
import {
  validateAvailabilityZone,
  validateSnapshotId,
  validateTagValue,
  validateTtlMs,
  validateVolumeId,
  validateVolumeSpec,
  type VolumeSpec,
} from "./validate-volume.js";
import type { EbsContext } from "./ebs-context.js";
import { DEFAULT_VOLUME_TTL_MS } from "./ebs-context.js";
import { checkExtraTags, checkTimeout, toEbsVolume } from "./ebs-convert.js";
import type { CreateEbsVolumeOptions, DeleteEbsOptions, EbsVolumes, ListEbsVolumesOptions, RestoreEbsSnapshotOptions } from "./ebs-options.js";
import { detachVolume } from "./ebs-attach.js";

/** CreateVolume with runctl's tags and one ClientToken for every repeat; `spec` is validated. */
export async function createVolume(ctx: EbsContext, input: CreateEbsVolumeOptions, spec: VolumeSpec): Promise<EbsVolume> {
  const { region, owner, retry, client, ledgerCreated } = ctx;
  const az = validateAvailabilityZone(input.availabilityZone, region);
  const persistent = input.persistent ?? false;
  if (typeof persistent !== "boolean") throw new RunctlError("INVALID_ARGUMENT", `persistent must be true or false.`);
  if (persistent && input.ttlMs !== undefined) throw new RunctlError("INVALID_ARGUMENT", "A persistent volume has no ttlMs: it is kept until deleted with force.");
  const ttlMs = persistent ? null : input.ttlMs === undefined ? DEFAULT_VOLUME_TTL_MS : validateTtlMs(input.ttlMs);
  const runId = input.runId === undefined ? undefined : validateRunIdTag(input.runId);
  const name = input.name === undefined ? (runId !== undefined ? `runctl-${runId}` : `runctl-vol-${randomUUID().slice(0, 8)}`) : validateTagValue("name", input.name);
  checkExtraTags(input.tags);
  const tags = runctlTags({ runId: runId ?? `volume:${name}`.slice(0, 255), owner, now: new Date(), ttlMs, name, persistent, extra: input.tags });
  // One token for every repeat of this call: a throttled-then-retried CreateVolume never makes two volumes.
  const clientToken = randomUUID();

  const out = await awsCall(
    "CreateVolume",
    (http) =>
      client().send(
        new CreateVolumeCommand({
          AvailabilityZone: az,
          VolumeType: spec.type,
          Size: spec.sizeGb,
          Iops: spec.iops,
          Throughput: spec.throughputMiBps,
          Encrypted: spec.encrypted,
          KmsKeyId: spec.kmsKeyId,
          SnapshotId: spec.snapshotId,
          TagSpecifications: [{ ResourceType: "volume", Tags: toAwsTags(tags) }],
          ClientToken: clientToken,
        }),
        http,
      ),
    { retry, signal: input.signal },
  );
  if (!out.VolumeId) throw new RunctlError("CLOUD_ERROR", "CreateVolume returned no volume id.");
  ledgerCreated("volume", out.VolumeId, tags, runId, persistent);
  // CreateVolume's answer may omit tags; they were set atomically with the volume, so report them.
  return toEbsVolume({ ...out, Tags: out.Tags && out.Tags.length > 0 ? out.Tags : toAwsTags(tags) });
}

/** A new volume from a snapshot (see {@link EbsVolumes.restore}). */
export async function restoreSnapshot(ctx: EbsContext, snapshotId: string, opts: RestoreEbsSnapshotOptions): Promise<EbsVolume> {
  const { region, warn, describeSnapshot } = ctx;
  validateSnapshotId(snapshotId);
  // Everything that can be checked without AWS first (zone, tags, spec), then the snapshot itself.
  validateAvailabilityZone(opts.availabilityZone, region);
  let spec = validateVolumeSpec({ ...opts, snapshotId });
  if (opts.persistent && opts.ttlMs !== undefined) throw new RunctlError("INVALID_ARGUMENT", "A persistent volume has no ttlMs: it is kept until deleted with force.");
  checkExtraTags(opts.tags);
  const snap = await describeSnapshot(snapshotId, opts.signal);
  if (!snap) throw new RunctlError("NOT_FOUND", `Snapshot ${snapshotId} does not exist in ${region}.`);
  if (spec.sizeGb !== undefined && spec.sizeGb < snap.sizeGb) {
    throw new RunctlError("INVALID_ARGUMENT", `sizeGb ${spec.sizeGb} is smaller than snapshot ${snapshotId} (${snap.sizeGb} GiB); a restored volume is at least the snapshot's size.`);
  }
  // Checks the type's size range and IOPS ratios against the size the volume will really have.
  if (spec.sizeGb === undefined) spec = validateVolumeSpec({ ...opts, snapshotId, sizeGb: snap.sizeGb });
  if (snap.state !== "completed") warn(`Snapshot ${snapshotId} is ${snap.state}; the volume may be slow until its blocks are loaded.`);
  return createVolume(ctx, opts, spec);
}

/** Deletes a volume (see {@link EbsVolumes.delete}). */
export async function deleteVolume(ctx: EbsContext, volumeId: string, opts: DeleteEbsOptions = {}): Promise<EbsDeleteResult> {
  const { retry, warn, client, ledgerDeleted, describe } = ctx;
  validateVolumeId(volumeId);
  const timeoutMs = checkTimeout(opts.timeoutMs, 300_000);
  const vol = await describe(volumeId, opts.signal);
  if (!vol || vol.state === "deleted" || vol.state === "deleting") return { id: volumeId, deleted: false, detached: false };
  if (vol.persistent && !opts.force) {
    throw new RunctlError("RESOURCE_IN_USE", `Volume ${volumeId} is persistent (runctl:persistent=true); pass force: true to delete it.`, { details: { volumeId } });
  }
  const attachment = vol.attachments.find((a) => a.state !== "detached");
  let detached = false;
  if (attachment || vol.state === "in-use") {
    if (!opts.force) {
      throw new RunctlError("RESOURCE_IN_USE", `Volume ${volumeId} is attached to ${attachment?.instanceId ?? "an instance"}; detach it first or pass force: true.`, {
        details: { volumeId, attachedTo: attachment?.instanceId },
      });
    }
    warn(`Volume ${volumeId} is attached to ${attachment?.instanceId ?? "an instance"}; force-detaching it before deleting.`);
    await detachVolume(ctx, volumeId, { force: true, wait: true, timeoutMs, signal: opts.signal });
    detached = true;
  }
  try {
    await awsCall("DeleteVolume", (http) => client().send(new DeleteVolumeCommand({ VolumeId: volumeId }), http), { retry, signal: opts.signal });
  } catch (err) {
    const code = awsErrorCode(err);
    if (code === "InvalidVolume.NotFound") {
      ledgerDeleted("volume", volumeId);
      return { id: volumeId, deleted: false, detached };
    }
    if (code === "VolumeInUse") throw new RunctlError("RESOURCE_IN_USE", `Volume ${volumeId} is in use (attached); detach it first.`, { cause: err, details: { volumeId } });
    throw err;
  }
  ledgerDeleted("volume", volumeId);
  return { id: volumeId, deleted: true, detached };
}

/** runctl-tagged volumes of the region (see {@link EbsVolumes.list}). */
export async function listVolumes(ctx: EbsContext, opts: ListEbsVolumesOptions = {}): Promise<EbsVolume[]> {
  const { retry, client } = ctx;
  const want = opts.owner ?? "all";
  const out: EbsVolume[] = [];
  let token: string | undefined;
  do {
    const page = await awsCall(
      "DescribeVolumes",
      (http) =>
        client().send(new DescribeVolumesCommand({ Filters: [{ Name: "tag-key", Values: [TAG.runId] }], MaxResults: 500, NextToken: token }), http),
      { retry, signal: opts.signal },
    );
    for (const v of page.Volumes ?? []) {
      const vol = toEbsVolume(v);
      // The filter is the server's; the tag check is ours.
      if (vol.runId === undefined) continue;
      if (want !== "all" && vol.tags[TAG.owner] !== want) continue;
      out.push(vol);
    }
    token = page.NextToken || undefined;
  } while (token);
  return out;
}
