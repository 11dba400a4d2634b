export { ebsVolumes, toEbsVolume, toEbsSnapshot } from "./ebs-volumes.js";
export type {
  EbsVolumes,
  EbsVolumesOptions,
  CreateEbsVolumeOptions,
  RestoreEbsSnapshotOptions,
  EbsWaitOptions,
  AttachEbsVolumeOptions,
  DetachEbsVolumeOptions,
  SnapshotEbsVolumeOptions,
  DeleteEbsOptions,
  ListEbsVolumesOptions,
} from "./ebs-volumes.js";
export { EBS_VOLUME_TYPES } from "./ebs-types.js";
export type {
  EbsVolumeType,
  EbsVolumeState,
  EbsAttachment,
  EbsVolume,
  EbsSnapshot,
  EbsSnapshotState,
  EbsAttachResult,
  EbsDetachResult,
  EbsDeleteResult,
  MountVolumeResult,
  PrewarmVolumeResult,
} from "./ebs-types.js";
export { mountVolume, mountVolumeScript, unmountVolume } from "./mount-volume.js";
export type { EbsFsType, MountVolumeOptions, UnmountVolumeOptions } from "./mount-volume.js";
export { prewarmVolume, prewarmVolumeScript } from "./prewarm-volume.js";
export type { PrewarmVolumeOptions } from "./prewarm-volume.js";
export { EBS_LIMITS, validateVolumeSpec, validateAvailabilityZone } from "./validate-volume.js";
export type { VolumeSpec, VolumeSpecInput } from "./validate-volume.js";
export type { AwsRetryOptions, AwsRetryOptions as Ec2RetryOptions } from "../../../aws/aws-call.js";
export type { PollOptions } from "../../../aws/aws-poll.js";
