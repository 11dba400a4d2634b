export { s3, s3FromDescriptor } from "./s3-storage.js";
export type { S3Storage, S3StorageOptions } from "./s3-storage.js";
export type { S3RetryOptions } from "./s3-retry.js";
export { parseS3Uri } from "./s3-uri.js";
export type { S3Location } from "./s3-uri.js";
