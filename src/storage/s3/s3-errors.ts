import { RunctlError } from "../../errors/runctl-error.js";
import { THROTTLING_CODES, TRANSIENT_CODES, networkErrorCode } from "../../aws/aws-errors.js";

/** Codes that mean the credentials are missing, wrong or expired. */
const CREDENTIAL_CODES = new Set([
  "InvalidAccessKeyId",
  "SignatureDoesNotMatch",
  "ExpiredToken",
  "InvalidToken",
  "TokenRefreshRequired",
  "CredentialsProviderError",
  "UnrecognizedClientException",
]);

/** What kind of failure an error from the AWS SDK (or the network below it) is. */
export type S3ErrorKind = "not_found" | "no_bucket" | "access_denied" | "credentials" | "precondition" | "retryable" | "other";

/** The facts runctl reads off an AWS SDK error. */
export interface S3ErrorFacts {
  /** The classification. */
  readonly kind: S3ErrorKind;
  /** The AWS error code (`NoSuchBucket`, `SlowDown`) or Node error code (`ECONNREFUSED`), when there is one. */
  readonly code: string | undefined;
  /** The HTTP status of the response, when one arrived. */
  readonly httpStatus: number | undefined;
}

function str(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value : undefined;
}

/**
 * Classifies an error thrown by an S3 client call, using the shapes the AWS SDK v3 really produces:
 * service exceptions carry `name` (the AWS error code, e.g. `SlowDown`, `NoSuchBucket`,
 * `AccessDenied`, `NotFound` for a HEAD 404) and `$metadata.httpStatusCode`; transport failures are
 * Node errors with a `code` (`ECONNREFUSED`, `ECONNRESET`) or a `TimeoutError`.
 *
 * @example
 * ```ts
 * classifyS3Error(Object.assign(new Error("Please reduce your request rate."), { name: "SlowDown", $metadata: { httpStatusCode: 503 } }));
 * // { kind: "retryable", code: "SlowDown", httpStatus: 503 }
 * ```
 */
export function classifyS3Error(err: unknown): S3ErrorFacts {
  const e = (typeof err === "object" && err !== null ? err : {}) as {
    name?: unknown;
    Code?: unknown;
    code?: unknown;
    $metadata?: { httpStatusCode?: unknown };
    $retryable?: unknown;
  };
  const httpStatus = typeof e.$metadata?.httpStatusCode === "number" ? e.$metadata.httpStatusCode : undefined;
  const awsCode = str(e.Code) ?? (str(e.name) && e.name !== "Error" ? str(e.name) : undefined);
  const net = networkErrorCode(err);
  const code = awsCode && awsCode !== "UnknownError" ? awsCode : (net ?? str(e.code) ?? awsCode);

  if (net) return { kind: "retryable", code, httpStatus };
  if (code === "NoSuchBucket") return { kind: "no_bucket", code, httpStatus };
  if (code === "NoSuchKey" || code === "NotFound" || (httpStatus === 404 && code !== "NoSuchUpload")) return { kind: "not_found", code, httpStatus };
  if (code && CREDENTIAL_CODES.has(code)) return { kind: "credentials", code, httpStatus };
  if (code === "AccessDenied" || code === "Forbidden" || code === "AllAccessDisabled" || httpStatus === 403) return { kind: "access_denied", code, httpStatus };
  if (code === "PreconditionFailed" || httpStatus === 412) return { kind: "precondition", code, httpStatus };
  if (code && (THROTTLING_CODES.has(code) || TRANSIENT_CODES.has(code))) return { kind: "retryable", code, httpStatus };
  if (httpStatus !== undefined && (httpStatus === 429 || httpStatus >= 500)) return { kind: "retryable", code, httpStatus };
  if (e.$retryable !== undefined && e.$retryable !== null && typeof e.$retryable === "object") return { kind: "retryable", code, httpStatus };
  return { kind: "other", code, httpStatus };
}

/**
 * Whether repeating the same S3 call may succeed (throttling, 5xx, a dropped or refused connection).
 *
 * @example
 * ```ts
 * isRetryableS3Error(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" })); // true
 * ```
 */
export function isRetryableS3Error(err: unknown): boolean {
  return classifyS3Error(err).kind === "retryable";
}

/** How a download stream may resume a body that failed (the fields both S3 download streams share). */
export interface BodyResumePolicy {
  /** How many times a dropped body may be resumed. */
  readonly maxResumes: number;
  /** Turns a body error into the error readers see. */
  readonly toError: (err: unknown) => RunctlError;
  /** The caller's abort: no resume once it fired. */
  readonly signal?: AbortSignal | undefined;
  /** The error for an abort. */
  readonly onAbort?: (() => RunctlError) | undefined;
}

/**
 * After a body failed with `err` and `resumes` resumes so far: `"resume"`, or how the stream ends
 * (`{ error }`: the abort's error once the caller aborted, else the failure when it is not transient
 * or the resumes are spent).
 */
export function resumeOrEnd(err: unknown, resumes: number, policy: BodyResumePolicy): "resume" | { readonly error: RunctlError | undefined } {
  if (policy.signal?.aborted) return { error: policy.onAbort?.() };
  if (!isRetryableS3Error(err) || resumes >= policy.maxResumes) return { error: policy.toError(err) };
  return "resume";
}

/** Where a failed call was aimed, for messages and details. */
export interface S3ErrorContext {
  /** The storage operation, in words (`put`, `get`, `list`, `delete`, `stat`, `resolve credentials`). */
  readonly operation: string;
  /** The bucket. */
  readonly bucket: string;
  /** The full object key or list prefix in the bucket, when there is one. */
  readonly key?: string | undefined;
  /** The endpoint (for S3-protocol servers), when set; printed in messages. */
  readonly endpoint?: string | null | undefined;
  /** How many attempts were made. */
  readonly attempts?: number | undefined;
  /** How long the attempts took in total. */
  readonly elapsedMs?: number | undefined;
  /** Strings that must never appear in a message (secret keys, session tokens). */
  readonly secrets?: Iterable<string> | undefined;
}

/**
 * Replaces every occurrence of a secret (4 characters or longer) with `***`.
 *
 * @example
 * ```ts
 * redact("key wJalrXUtnFEMI", ["wJalrXUtnFEMI"]); // "key ***"
 * ```
 */
export function redact(text: string, secrets: Iterable<string> | undefined): string {
  let out = text;
  for (const secret of secrets ?? []) if (secret.length >= 4) out = out.split(secret).join("***");
  return out;
}

/**
 * Turns an error from an S3 call into a {@link RunctlError}: NOT_FOUND for a missing object,
 * ABORTED when `signal` fired, otherwise STORAGE_ERROR with a message naming the bucket and key and
 * `retryable` set for throttling, 5xx and network failures. Messages never contain credentials.
 *
 * @example
 * ```ts
 * try { await client.send(cmd) } catch (e) { throw toStorageError(e, { operation: "get", bucket, key }) }
 * ```
 */
export function toStorageError(err: unknown, context: S3ErrorContext, signal?: AbortSignal): RunctlError {
  if (err instanceof RunctlError) return err;
  const where = `s3://${context.bucket}${context.key !== undefined && context.key !== "" ? `/${context.key}` : ""}`;
  const at = context.endpoint ? ` at ${context.endpoint}` : "";
  if (signal?.aborted || (err as { name?: unknown } | undefined)?.name === "AbortError") {
    return new RunctlError("ABORTED", `Aborted: S3 ${context.operation} of ${where}.`, { cause: signal?.reason ?? err });
  }
  const facts = classifyS3Error(err);
  const original = redact(err instanceof Error ? err.message : String(err), context.secrets);
  const tries = context.attempts && context.attempts > 1 ? ` after ${context.attempts} attempts in ${Math.round(context.elapsedMs ?? 0)} ms` : "";
  const codeText = facts.code ? `${facts.code}${facts.httpStatus ? ` (HTTP ${facts.httpStatus})` : ""}` : facts.httpStatus ? `HTTP ${facts.httpStatus}` : "error";
  const details = {
    operation: context.operation,
    bucket: context.bucket,
    ...(context.key !== undefined ? { key: context.key } : {}),
    ...(context.endpoint ? { endpoint: context.endpoint } : {}),
    ...(facts.code ? { awsCode: facts.code } : {}),
    ...(facts.httpStatus !== undefined ? { httpStatus: facts.httpStatus } : {}),
    ...(context.attempts !== undefined ? { attempts: context.attempts } : {}),
  };
  let message: string;
  let code: "STORAGE_ERROR" | "NOT_FOUND" = "STORAGE_ERROR";
  switch (facts.kind) {
    case "not_found":
      code = "NOT_FOUND";
      message = `No object ${where}${at}.`;
      break;
    case "no_bucket":
      message = `S3 ${context.operation} of ${where} failed: bucket ${context.bucket} does not exist${at}.`;
      break;
    case "access_denied":
      message = `S3 ${context.operation} of ${where} failed: access denied${at} (${codeText}); check that the credentials may ${context.operation} in bucket ${context.bucket}.`;
      break;
    case "credentials":
      message = `S3 ${context.operation} of ${where} failed: the AWS credentials were rejected or are unavailable${at} (${codeText}: ${original}).`;
      break;
    case "precondition":
      message = `S3 ${context.operation} of ${where} failed: the object changed while it was being read (${codeText}).`;
      break;
    case "retryable":
      message = `S3 ${context.operation} of ${where} failed${tries}${at}: ${codeText}: ${original} (retryable).`;
      break;
    default:
      message = `S3 ${context.operation} of ${where} failed${at}: ${codeText}: ${original}`;
  }
  return new RunctlError(code, redact(message, context.secrets), { cause: err, retryable: facts.kind === "retryable", details });
}
