import pRetry from "p-retry";
import { RunctlError } from "../../errors/runctl-error.js";
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
export interface S3RetryOptions {
  /** Repeats after the first attempt. @defaultValue 10 */
  readonly retries?: number;
  /** Delay before the first repeat; doubled each time, times a random factor of 1–2. @defaultValue 100 */
  readonly minDelayMs?: number;
  /** Longest delay between two attempts. @defaultValue 5000 */
  readonly maxDelayMs?: number;
  /** Total time budget of one call, attempts and delays included. @defaultValue 60000 */
  readonly maxElapsedMs?: number;
}

/** {@link S3RetryOptions} with every default filled in (see {@link resolveRetryOptions}). */
export type ResolvedS3RetryOptions = Required<S3RetryOptions>;

/**
 * Fills in defaults and validates; INVALID_ARGUMENT for a negative or non-numeric setting.
 *
 * @example
 * ```ts
 * resolveRetryOptions({ retries: 3 }); // { retries: 3, minDelayMs: 100, maxDelayMs: 5000, maxElapsedMs: 60000 }
 * ```
 */
export function resolveRetryOptions(options: S3RetryOptions | undefined): ResolvedS3RetryOptions {
  const resolved = {
    retries: options?.retries ?? 10,
    minDelayMs: options?.minDelayMs ?? 100,
    maxDelayMs: options?.maxDelayMs ?? 5_000,
    maxElapsedMs: options?.maxElapsedMs ?? 60_000,
  };
  for (const [name, value] of Object.entries(resolved)) {
    if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
      throw new RunctlError("INVALID_ARGUMENT", `s3() retry.${name} must be a finite number >= 0, got ${String(value)}.`);
    }
  }
  return resolved;
}

/**
 * Runs `attempt` and repeats it on retryable S3 errors within the retry budget; every failure
 * comes out as a {@link RunctlError} (see {@link toStorageError}).
 *
 * @example
 * ```ts
 * const head = await withS3Retry(() => client.send(new HeadObjectCommand({ Bucket, Key })), resolveRetryOptions({}), { operation: "stat", bucket: Bucket, key: Key }, signal);
 * ```
 */
export async function withS3Retry<T>(
  attempt: () => Promise<T>,
  retry: ResolvedS3RetryOptions,
  context: S3ErrorContext,
  signal: AbortSignal | undefined,
  extra: { readonly unref?: boolean } = {},
): Promise<T> {
  const started = performance.now();
  let attempts = 0;
  try {
    return await pRetry(
      async () => {
        attempts++;
        return await attempt();
      },
      {
        retries: retry.retries,
        minTimeout: retry.minDelayMs,
        maxTimeout: retry.maxDelayMs,
        maxRetryTime: retry.maxElapsedMs,
        factor: 2,
        randomize: true,
        signal,
        unref: extra.unref ?? false,
        shouldRetry: ({ error }) => !(error instanceof RunctlError) && isRetryableS3Error(error),
      },
    );
  } catch (err) {
    throw toStorageError(err, { ...context, attempts, elapsedMs: performance.now() - started }, signal);
  }
}
