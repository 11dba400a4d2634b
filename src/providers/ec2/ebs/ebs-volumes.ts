import { RunctlError } from "../../../errors/runctl-error.js";
import { validateVolumeId, validateVolumeSpec } from "./validate-volume.js";
import { ebsContext } from "./ebs-context.js";
import { checkTimeout, toEbsSnapshot, toEbsVolume } from "./ebs-convert.js";
import type {
  AttachEbsVolumeOptions,
  CreateEbsVolumeOptions,
  DeleteEbsOptions,
  DetachEbsVolumeOptions,
  EbsVolumes,
  EbsVolumesOptions,
  EbsWaitOptions,
  ListEbsVolumesOptions,
  RestoreEbsSnapshotOptions,
  SnapshotEbsVolumeOptions,
} from "./ebs-options.js";
import { attachVolume, detachVolume } from "./ebs-attach.js";
import { createVolume, deleteVolume, listVolumes, restoreSnapshot } from "./ebs-volume-ops.js";
import { deleteSnapshot, snapshotVolume, waitForSnapshot } from "./ebs-snapshots.js";

/**
 * runctl's EBS API for one region; see {@link EbsVolumes}.
 *
 * @param options - Region, optional client, owner tag, warnings callback, retry and poll pacing.
 * @returns The volume operations.
 * @throws RunctlError INVALID_ARGUMENT for a bad region or option.
 *
 * @example
 * ```ts
 * const volumes = ebsVolumes({ region: "eu-west-1" });
 * for (const v of await volumes.list()) console.log(v.volumeId, v.state, v.persistent);
 * ```
 */
export function ebsVolumes(options: EbsVolumesOptions): EbsVolumes {
  const ctx = ebsContext(options);
  const { region, describe, waitVolume, isAvailable, isAttachedTo, availabilityZoneOf } = ctx;
  return {
    region,
    async create(input) {
      return createVolume(ctx, input, validateVolumeSpec(input));
    },
    async describe(volumeId, opts = {}) {
      validateVolumeId(volumeId);
      return describe(volumeId, opts.signal);
    },
    async waitFor(volumeId, state, opts = {}) {
      validateVolumeId(volumeId);
      if (state !== "available" && state !== "in-use") throw new RunctlError("INVALID_ARGUMENT", `state must be "available" or "in-use", got ${JSON.stringify(state)}.`);
      const timeoutMs = checkTimeout(opts.timeoutMs, 300_000);
      return waitVolume(volumeId, state, state === "available" ? isAvailable : isAttachedTo(), timeoutMs, opts.signal);
    },
    attach: (volumeId, instanceId, opts = {}) => attachVolume(ctx, volumeId, instanceId, opts),
    detach: (volumeId, opts = {}) => detachVolume(ctx, volumeId, opts),
    snapshot: (volumeId, opts = {}) => snapshotVolume(ctx, volumeId, opts),
    waitForSnapshot: (snapshotId, opts = {}) => waitForSnapshot(ctx, snapshotId, opts),
    restore: (snapshotId, opts) => restoreSnapshot(ctx, snapshotId, opts),
    delete: (volumeId, opts = {}) => deleteVolume(ctx, volumeId, opts),
    deleteSnapshot: (snapshotId, opts = {}) => deleteSnapshot(ctx, snapshotId, opts),
    list: (opts = {}) => listVolumes(ctx, opts),
    async availabilityZoneOf(instanceId, opts = {}) {
      return availabilityZoneOf(instanceId, opts.signal);
    },
  };
}

export { toEbsSnapshot, toEbsVolume };
export type { AttachEbsVolumeOptions, CreateEbsVolumeOptions, DeleteEbsOptions, DetachEbsVolumeOptions, EbsVolumes, EbsVolumesOptions, EbsWaitOptions, ListEbsVolumesOptions, RestoreEbsSnapshotOptions, SnapshotEbsVolumeOptions };
