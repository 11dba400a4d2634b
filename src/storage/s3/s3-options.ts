import type { S3Client, S3ClientConfig } from "@aws-sdk/client-s3";
import { RunctlError } from "../../errors/runctl-error.js";
import type { MachineSecrets, S3StorageDescriptor, Storage, StorageCallOptions, StorageObjectInfo } from "../types.js";
import type { S3ErrorContext } from "./s3-errors.js";
import type { S3RetryOptions } from "./s3-retry.js";

/** AWS credentials: an access key pair, with a session token for temporary ones. */
export type AwsCredentialIdentity = { readonly accessKeyId: string; readonly secretAccessKey: string; readonly sessionToken?: string | undefined };
/** Credentials as the S3 client accepts them: static, or a function that resolves them. */
export type S3Credentials = NonNullable<S3ClientConfig["credentials"]>;

export const MIB = 1024 * 1024;
/** S3's smallest allowed multipart part (all but the last). */
export const MIN_PART_SIZE = 5 * MIB;
/** S3's largest allowed part. */
export const MAX_PART_SIZE = 5 * 1024 * MIB;
/** DeleteObjects takes at most this many keys. */
export const DELETE_BATCH = 1000;
/** DeleteObjects batches in flight at once. */
export const DELETE_CONCURRENCY = 4;

/**
 * Options of {@link s3}.
 *
 * With an injected `client`, calls go through that client as configured; `region`, `endpoint`,
 * `forcePathStyle` and `checksums` then only describe the bucket to agents on machines
 * ({@link S3Storage.machineDescriptor}), and `credentials` is ignored.
 *
 * @example
 * ```ts
 * const store = s3("s3://ml-ckpt/team/runs", { region: "eu-west-1" });
 * const minio = s3("s3://bucket", {
 *   endpoint: "http://10.0.0.2:9000", forcePathStyle: true, checksums: "when_required",
 *   credentials: { accessKeyId: "…", secretAccessKey: "…" },
 * });
 * ```
 */
export interface S3StorageOptions {
  /**
   * A ready S3 client to use instead of creating one (its own retry settings stay in force, on top
   * of runctl's).
   * @defaultValue a new `S3Client` built from the other options, with the SDK's own retries off
   * (runctl retries; see `retry`)
   */
  readonly client?: S3Client | undefined;
  /**
   * AWS region. Also handed to agents on machines (null there means the machine's default).
   * @defaultValue `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1` when `endpoint` is set, else
   * the SDK's default chain (`~/.aws/config`)
   */
  readonly region?: string | undefined;
  /**
   * Endpoint URL of an S3-protocol server (MinIO, s3rver, Ceph…), `http(s)://host[:port]`.
   * @defaultValue AWS S3 itself
   */
  readonly endpoint?: string | undefined;
  /**
   * Address objects as `endpoint/bucket/key` instead of `bucket.endpoint/key` (most S3-protocol servers need this).
   * @defaultValue false (with an injected client: the client's setting)
   */
  readonly forcePathStyle?: boolean | undefined;
  /**
   * Credentials (static or a provider function).
   * @defaultValue the SDK's default chain (environment, `~/.aws`, SSO, instance profile…)
   */
  readonly credentials?: S3Credentials | undefined;
  /**
   * When request checksums are computed and response checksums validated: `when_supported` (the
   * AWS SDK's default) or `when_required` (servers that mangle streamed uploads under the default,
   * such as s3rver).
   * @defaultValue "when_supported"
   */
  readonly checksums?: "when_supported" | "when_required" | undefined;
  /**
   * Which S3 client the agent on a machine uses: `auto` (boto3 when importable, else the `aws` CLI), `boto3` or `cli`.
   * @defaultValue "auto"
   */
  readonly machineBackend?: "auto" | "boto3" | "cli" | undefined;
  /**
   * Whether {@link S3Storage.machineSecrets} resolves this client's credentials and hands them to
   * the machine (in memory only). False: the machine uses its own credential chain (an EC2 instance
   * profile). Unset: forwarded over channels that leave no copy (local, SSH), never over SSM, whose
   * input is staged in S3 (the machine then uses its instance profile). True over SSM is refused
   * (UNSUPPORTED) before anything is created.
   * @defaultValue forwarded, except over SSM
   */
  readonly forwardCredentials?: boolean | undefined;
  /**
   * Part size of multipart uploads, in bytes (5 MiB to 5 GiB), and range size of downloads. Bodies
   * up to this size are sent with one PutObject and read with one GET. The largest object a
   * streamed `put` can write is `partSizeBytes × 10,000`.
   * @defaultValue 8 MiB (objects up to 78 GiB)
   */
  readonly partSizeBytes?: number | undefined;
  /**
   * Parts uploaded at once, and ranges downloaded at once. A streamed `put` holds about
   * `partSizeBytes × (queueSize + 1)` bytes of parts in memory (40 MiB with the defaults), a `get`
   * of a large object about `partSizeBytes × queueSize` (32 MiB), whatever the object's size.
   * @defaultValue 4
   */
  readonly queueSize?: number | undefined;
  /** How transient failures are retried. @defaultValue see {@link S3RetryOptions} */
  readonly retry?: S3RetryOptions | undefined;
}

/**
 * An S3 bucket (and key prefix) as a {@link Storage}. Returned by {@link s3}.
 *
 * @example
 * ```ts
 * const store: S3Storage = s3("s3://ml-ckpt/runs");
 * console.log(store.bucket, store.prefix); // "ml-ckpt" "runs"
 * ```
 */
export interface S3Storage extends Storage {
  /** `s3://bucket` or `s3://bucket/prefix`, normalized. */
  readonly uri: string;
  /** The bucket. */
  readonly bucket: string;
  /** The key prefix without leading or trailing `/` (`""`: the bucket root). Storage keys live under `prefix/`. */
  readonly prefix: string;
  /** The S3 client every call goes through (the injected one, or the one `s3()` created). */
  readonly client: S3Client;
  /** Parallel ranged GETs written at their offsets into a temporary file, renamed into place when complete. */
  download(key: string, path: string, options?: StorageCallOptions): Promise<StorageObjectInfo>;
  /** How agents on machines reach this bucket (the same for every machine). */
  machineDescriptor(context?: { readonly sharesLocalFilesystem: boolean }): S3StorageDescriptor;
  /**
   * The client's credentials, resolved now, for the agent on a machine; undefined when
   * `forwardCredentials` is false (the machine uses its own chain).
   */
  machineSecrets(options?: StorageCallOptions): Promise<MachineSecrets | undefined>;
}

/** Used by s3(). */
export function positiveInteger(name: string, value: number, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new RunctlError("INVALID_ARGUMENT", `s3() ${name} must be an integer from ${min} to ${max}, got ${String(value)}.`);
  }
  return value;
}

/** Used by s3(). */
export function oneOf<T extends string>(name: string, value: T | undefined, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (!allowed.includes(value)) {
    throw new RunctlError("INVALID_ARGUMENT", `s3() ${name} must be one of ${allowed.map((a) => JSON.stringify(a)).join(", ")}, got ${JSON.stringify(value)}.`);
  }
  return value;
}

/** Validates and normalizes an endpoint URL: http(s), no credentials in it, no trailing `/`. */
export function normalizeEndpoint(endpoint: string): string {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    // Never echo what might be credentials in the URL's user-info part.
    const shown = String(endpoint).replace(/^([a-z][a-z0-9+.-]*:\/\/)?.*@/is, (_, scheme: string | undefined) => `${scheme ?? ""}***@`);
    throw new RunctlError("INVALID_ARGUMENT", `s3() endpoint ${JSON.stringify(shown)} is not a URL (expected http(s)://host[:port]).`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new RunctlError("INVALID_ARGUMENT", `s3() endpoint must be an http:// or https:// URL, got ${url.protocol}.`);
  }
  if (url.username || url.password) {
    throw new RunctlError("INVALID_ARGUMENT", "s3() endpoint must not contain credentials; pass them as `credentials`.");
  }
  if (url.search || url.hash) throw new RunctlError("INVALID_ARGUMENT", "s3() endpoint must not have a query or fragment.");
  return url.href.replace(/\/+$/, "");
}

/** Used by s3(). */
export function stripQuotes(etag: string | undefined): string | undefined {
  return etag === undefined ? undefined : etag.replace(/^"(.*)"$/, "$1");
}

/** Used by s3(). */
export function info(key: string, size: number | undefined, modifiedAt: Date | undefined, etag: string | undefined): StorageObjectInfo {
  const tag = stripQuotes(etag);
  return { key, size: size ?? 0, ...(modifiedAt ? { modifiedAt } : {}), ...(tag ? { etag: tag } : {}) };
}
