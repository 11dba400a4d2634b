import { awsCall, resolveAwsRetry, type AwsRetryOptions, type ResolvedAwsRetryOptions } from "../../aws/aws-call.js";
import { isRetryableS3Error, toStorageError, type S3ErrorContext } from "./s3-errors.js";

/**
 * How runctl repeats S3 calls that failed transiently: throttling (`SlowDown`, `Throttling`,
 * `RequestLimitExceeded`, HTTP 429/503), other 5xx responses, and dropped or refused connections
 * (`ECONNREFUSED`, `ECONNRESET`: a server restarting). Delays grow exponentially with jitter; the
 * call gives up after `retries` repeats or once `maxElapsedMs` have passed, whichever comes first,
 * and then fails with a `retryable` STORAGE_ERROR.
 *
 * @example
 * ```ts
 * s3("s3://ml-ckpt/runs", { retry: { retries: 20, maxElapsedMs: 300_000 } });
 * ```
 */
export type S3RetryOptions = AwsRetryOptions;

/** The defaults of {@link S3RetryOptions}: 11 HTTP requests at most, within 60 s. */
export const DEFAULT_S3_RETRY: ResolvedAwsRetryOptions = { retries: 10, minDelayMs: 100, maxDelayMs: 5_000, maxElapsedMs: 60_000 };

/** {@link S3RetryOptions} with every default filled in (see {@link resolveRetryOptions}). */
export type ResolvedS3RetryOptions = ResolvedAwsRetryOptions;

/**
 * Fills in defaults and validates; INVALID_ARGUMENT for a negative or non-numeric setting.
 *
 * @example
 * ```ts
 * resolveRetryOptions({ retries: 3 }); // { retries: 3, minDelayMs: 100, maxDelayMs: 5000, maxElapsedMs: 60000 }
 * ```
 */
export function resolveRetryOptions(options: S3RetryOptions | undefined): ResolvedS3RetryOptions {
  return resolveAwsRetry(options, DEFAULT_S3_RETRY, "s3() retry");
}

/**
 * Runs `attempt` through the AWS layer's one retry loop ({@link awsCall}), repeating it on
 * retryable S3 errors within the retry budget; every failure comes out as a {@link RunctlError}
 * (see {@link toStorageError}).
 *
 * @example
 * ```ts
 * const head = await withS3Retry(() => client.send(new HeadObjectCommand({ Bucket, Key })), resolveRetryOptions({}), { operation: "stat", bucket: Bucket, key: Key }, signal);
 * ```
 */
export function withS3Retry<T>(
  attempt: () => Promise<T>,
  retry: ResolvedS3RetryOptions,
  context: S3ErrorContext,
  signal: AbortSignal | undefined,
  extra: { readonly unref?: boolean | undefined } = {},
): Promise<T> {
  let attempts = 0;
  const started = performance.now();
  const facts = (): S3ErrorContext => ({ ...context, attempts, elapsedMs: performance.now() - started });
  return awsCall(
    context.operation,
    () => {
      attempts++;
      return attempt();
    },
    {
      retry,
      signal,
      retryWhen: isRetryableS3Error,
      giveUp: (err) => toStorageError(err, facts(), signal),
      onAbort: (err) => toStorageError(err, facts(), signal),
      unref: extra.unref ?? false,
    },
  );
}
