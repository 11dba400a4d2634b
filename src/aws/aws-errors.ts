import { RunctlError, type RunctlErrorCode } from "../errors/runctl-error.js";

/**
 * The one classifier of AWS SDK v3 errors: its code, and whether it is throttling, a capacity
 * shortage, or transient. Every AWS call in runctl (EC2, SSM, S3) decides retries with these.
 */

/** AWS error codes that mean "slow down and try again". */
export const THROTTLING_CODES: ReadonlySet<string> = new Set([
  "RequestLimitExceeded",
  "Throttling",
  "ThrottlingException",
  "TooManyRequestsException",
  "ThrottledException",
  "RequestThrottled",
  "RequestThrottledException",
  "SlowDown",
  "ProvisionedThroughputExceededException",
  "BandwidthLimitExceeded",
  "EC2ThrottledException",
]);

/** AWS error codes that mean "no capacity for this request here; another zone, type or market may have it". */
export const CAPACITY_ERROR_CODES: ReadonlySet<string> = new Set([
  "InsufficientInstanceCapacity",
  "SpotMaxPriceTooLow",
  "InsufficientHostCapacity",
  "InsufficientReservedInstanceCapacity",
  "InsufficientCapacityOnOutpost",
  "MaxSpotInstanceCountExceeded",
  "Unsupported",
]);

/** AWS error codes of transient server-side or transport conditions. */
export const TRANSIENT_CODES: ReadonlySet<string> = new Set([
  "InternalError",
  "ServiceUnavailable",
  "RequestTimeout",
  "RequestTimeoutException",
  "PriorRequestNotComplete",
  "TimeoutError",
  "NetworkingError",
  "OperationAborted",
]);

/** Node.js socket error codes of a dropped or refused connection: the request may not have arrived. */
export const NETWORK_CODES: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "EAI_AGAIN",
  "UND_ERR_SOCKET",
  "ERR_STREAM_PREMATURE_CLOSE",
]);

/**
 * The AWS error code of an error: an SDK v3 error's `Code`/`code`/`name`; for a {@link RunctlError}
 * made from one, the code it carries (`details.awsCode`). Undefined when there is none.
 *
 * @example
 * ```ts
 * if (awsErrorCode(err) === "InvalidVolume.NotFound") return undefined;
 * ```
 */
export function awsErrorCode(err: unknown): string | undefined {
  if (err instanceof RunctlError) {
    const code = err.details["awsCode"];
    return typeof code === "string" ? code : undefined;
  }
  if (typeof err !== "object" || err === null) return undefined;
  const e = err as { name?: unknown; Code?: unknown; code?: unknown };
  for (const v of [e.Code, e.code, e.name]) if (typeof v === "string" && v !== "" && v !== "Error") return v;
  return undefined;
}

/**
 * The HTTP status of the response an SDK error came with, if one arrived.
 *
 * @example
 * ```ts
 * httpStatusOf(err) === 503;
 * ```
 */
export function httpStatusOf(err: unknown): number | undefined {
  const status = (err as { $metadata?: { httpStatusCode?: unknown } } | null)?.$metadata?.httpStatusCode;
  return typeof status === "number" ? status : undefined;
}

/**
 * Whether a raw SDK error is throttling. A {@link RunctlError} is never: it already went through
 * the retries of {@link awsCall}.
 *
 * @example
 * ```ts
 * isThrottlingError(new ThrottlingException({ message: "Rate exceeded", $metadata: {} })); // true
 * ```
 */
export function isThrottlingError(err: unknown): boolean {
  if (err instanceof RunctlError) return false;
  const code = awsErrorCode(err);
  return (code !== undefined && THROTTLING_CODES.has(code)) || httpStatusOf(err) === 429 || (err as { $retryable?: { throttling?: boolean } } | null)?.$retryable?.throttling === true;
}

/**
 * Whether an error (raw or wrapped) says AWS has no capacity for the request here.
 *
 * @example
 * ```ts
 * isCapacityError(err); // true for InsufficientInstanceCapacity
 * ```
 */
export function isCapacityError(err: unknown): boolean {
  const code = awsErrorCode(err);
  return code !== undefined && CAPACITY_ERROR_CODES.has(code);
}

/** Walks `cause` links (bounded) looking for a Node network error code. */
export function networkErrorCode(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && typeof current === "object" && current !== null; depth++) {
    const e = current as { code?: unknown; name?: unknown; message?: unknown; cause?: unknown };
    if (typeof e.code === "string" && NETWORK_CODES.has(e.code)) return e.code;
    if (typeof e.message === "string" && /socket hang up|premature close|other side closed/i.test(e.message)) return "ECONNRESET";
    current = e.cause;
  }
  return undefined;
}

/**
 * Whether a raw SDK error is worth repeating as is: throttling, a server-side (5xx) failure, a
 * transient AWS code, or a dropped or refused connection. Capacity errors are not (the same request
 * fails the same way; try another zone or market), and neither is a {@link RunctlError}.
 *
 * @example
 * ```ts
 * if (isTransientAwsError(err)) await sleepMs(500);
 * ```
 */
export function isTransientAwsError(err: unknown): boolean {
  if (err instanceof RunctlError) return false;
  if (isThrottlingError(err)) return true;
  if (isCapacityError(err)) return false;
  if (networkErrorCode(err) !== undefined) return true;
  const code = awsErrorCode(err);
  if (code !== undefined && (TRANSIENT_CODES.has(code) || NETWORK_CODES.has(code))) return true;
  const status = httpStatusOf(err);
  if (status !== undefined && status >= 500) return true;
  const retryable = (err as { $retryable?: unknown } | null)?.$retryable;
  return typeof retryable === "object" && retryable !== null;
}

/**
 * Wraps an AWS SDK error as a {@link RunctlError} that names the call and the AWS code, keeping the
 * original as `cause`. Throttling and 5xx errors are retryable; capacity errors get CAPACITY_UNAVAILABLE.
 *
 * @example
 * ```ts
 * try { await ec2.send(cmd) } catch (e) { throw cloudError(e, "RunInstances") }
 * ```
 */
export function cloudError(err: unknown, operation: string, code?: RunctlErrorCode): RunctlError {
  if (err instanceof RunctlError) return err;
  const awsCode = awsErrorCode(err);
  const status = httpStatusOf(err);
  const message = err instanceof Error ? err.message : String(err);
  const capacity = isCapacityError(err);
  const retryable = isThrottlingError(err) || (status !== undefined && status >= 500) || capacity;
  return new RunctlError(code ?? (capacity ? "CAPACITY_UNAVAILABLE" : "CLOUD_ERROR"), `${operation} failed${awsCode ? ` (${awsCode})` : ""}: ${message}`, {
    retryable,
    cause: err,
    details: { operation, ...(awsCode ? { awsCode } : {}), ...(status !== undefined ? { httpStatusCode: status } : {}) },
  });
}
