import { RunctlError, type RunctlErrorCode } from "./runctl-error.js";

/** AWS error codes that mean "slow down and try again". */
const THROTTLING = new Set(["RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException", "ThrottledException", "RequestThrottled", "RequestThrottledException", "SlowDown"]);

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

/** The AWS error code of an SDK v3 error (its `name`, else `Code`), or undefined. */
export function awsErrorCode(err: unknown): string | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const e = err as { name?: unknown; Code?: unknown; code?: unknown };
  for (const v of [e.Code, e.code, e.name]) if (typeof v === "string" && v !== "Error") return v;
  return undefined;
}

/** Whether an AWS error is throttling (the SDK's own retries ran out, or it is not retried by it). */
export function isThrottlingError(err: unknown): boolean {
  const code = awsErrorCode(err);
  const status = (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
  return (code !== undefined && THROTTLING.has(code)) || status === 429 || (err as { $retryable?: { throttling?: boolean } } | null)?.$retryable?.throttling === true;
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
  const status = (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
  const message = err instanceof Error ? err.message : String(err);
  const capacity = awsCode !== undefined && CAPACITY_ERROR_CODES.has(awsCode);
  const retryable = isThrottlingError(err) || (status !== undefined && status >= 500) || capacity;
  return new RunctlError(code ?? (capacity ? "CAPACITY_UNAVAILABLE" : "CLOUD_ERROR"), `${operation} failed${awsCode ? ` (${awsCode})` : ""}: ${message}`, {
    retryable,
    cause: err,
    details: { operation, ...(awsCode ? { awsCode } : {}), ...(status !== undefined ? { httpStatusCode: status } : {}) },
  });
}
