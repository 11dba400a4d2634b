/**
 * `runctl/aws`: the AWS adapters (EC2 machines, the SSM transport, S3 storage, EBS volumes, the
 * leak sweeper). Importing this entry loads the AWS SDK; the root entry `runctl` does not.
 *
 * @example
 * ```ts
 * import { Runctl } from "runctl";
 * import { ec2, s3 } from "runctl/aws";
 *
 * const run = Runctl.instance(ec2({ region: "us-east-1", instanceType: "g5.xlarge" }))
 *   .checkpoints({ storage: s3("s3://ml-ckpt/runs") })
 *   .train("train.py");
 * ```
 *
 * @packageDocumentation
 */
export { ec2, sweepEc2, RUNCTL_TAGS, ebsVolumes, mountVolume, unmountVolume, prewarmVolume, EBS_VOLUME_TYPES } from "./providers/ec2/index.js";
export type {
  Ec2ProviderOptions,
  Ec2SpotOptions,
  Ec2SshAccess,
  Ec2SsmAccess,
  SweepEc2Options,
  EbsVolumes,
  EbsVolumesOptions,
  CreateEbsVolumeOptions,
  RestoreEbsSnapshotOptions,
  EbsVolume,
  EbsSnapshot,
  EbsVolumeType,
  MountVolumeOptions,
  MountVolumeResult,
  PrewarmVolumeOptions,
  PrewarmVolumeResult,
  Ec2RetryOptions,
  PollOptions,
  SweepTiming,
  EbsSnapshotState,
  EbsAttachment,
  EbsVolumeState,
  EbsFsType,
  EbsAttachResult,
  EbsDeleteResult,
  EbsDetachResult,
  UnmountVolumeOptions,
  AttachEbsVolumeOptions,
  DeleteEbsOptions,
  DetachEbsVolumeOptions,
  ListEbsVolumesOptions,
  SnapshotEbsVolumeOptions,
  EbsWaitOptions,
} from "./providers/ec2/index.js";
export type { AwsRetryOptions } from "./aws/aws-call.js";

export { ssmTransport } from "./transport/ssm/index.js";
export type { SsmTransport, SsmTransportOptions } from "./transport/ssm/index.js";

export { s3, s3FromDescriptor, parseS3Uri } from "./storage/s3/index.js";
export type { S3Storage, S3StorageOptions, S3RetryOptions, S3Location } from "./storage/s3/index.js";
export type { S3Credentials } from "./storage/s3/s3-options.js";
