/**
 * `runctl/s3`: S3 storage alone (`s3()`, `s3FromDescriptor()`, `parseS3Uri()`), for programs that
 * move data to and from S3 without machines on AWS. It loads `@aws-sdk/client-s3` and nothing of
 * EC2, SSM or SSH: ~0.13 s of module loading where `runctl/aws` takes ~0.5 s (its EC2 client alone
 * ~0.4 s). `runctl/aws` exports the very same functions (decision 0031).
 *
 * @packageDocumentation
 */
export { s3, s3FromDescriptor, parseS3Uri } from "./storage/s3/index.js";
export type { S3Storage, S3StorageOptions, S3RetryOptions, S3Location } from "./storage/s3/index.js";
export type { S3Credentials } from "./storage/s3/s3-options.js";
