export { ec2 } from "./ec2-provider.js";
export type { Ec2ProviderOptions, Ec2SpotOptions, Ec2SshAccess, Ec2SsmAccess } from "./ec2-options.js";
export { TAG as RUNCTL_TAGS } from "./tags.js";
export { sweepEc2 } from "./sweep.js";
export type { SweepEc2Options, SweepTiming } from "./sweep.js";
export * from "./ebs/index.js";
