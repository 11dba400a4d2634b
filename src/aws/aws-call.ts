import pRetry from "p-retry";
import { RunctlError, abortError } from "../errors/runctl-error.js";
import { cloudError, isTransientAwsError } from "./aws-errors.js";

/**
 * How runctl repeats an AWS call that failed transiently (throttling such as `RequestLimitExceeded`
 * or `SlowDown`, a 5xx, a dropped connection). The SDK clients runctl builds do not retry
 * themselves (`maxAttempts: 1`, see `AWS_SDK_MAX_ATTEMPTS`), so one call makes at most
 * `retries + 1` HTTP requests. Delays double from `minDelayMs` up to `maxDelayMs`, each times a
 * random factor of 1–2; `maxElapsedMs` bounds the whole call.
 *
 * @example
 * ```ts
 * ebsVolumes({ region: "us-east-1", retry: { retries: 8 } });
 * ```
 */
export interface AwsRetryOptions {
  /** Repeats after the first attempt. @defaultValue 8 for EC2 and SSM, 10 for S3 */
  readonly retries?: number | undefined;
  /** Pause before the first repeat. @defaultValue 250 (S3: 100) */
  readonly minDelayMs?: number | undefined;
  /** Longest pause between two attempts. @defaultValue 8000 (S3: 5000) */
  readonly maxDelayMs?: number | undefined;
  /** Total time budget of one call, attempts and pauses included. @defaultValue no limit (S3: 60000) */
  readonly maxElapsedMs?: number | undefined;
}

/**
 * {@link AwsRetryOptions} with every default filled in.
 *
 * @example
 * ```ts
 * const retry: ResolvedAwsRetryOptions = resolveAwsRetry(undefined);
 * ```
 */
export interface ResolvedAwsRetryOptions {
  readonly retries: number;
  readonly minDelayMs: number;
  readonly maxDelayMs: number;
  readonly maxElapsedMs: number;
}

/**
 * What every AWS SDK client runctl builds is given as `maxAttempts`: one request per `send`. The
 * retries happen in one place, {@link awsCall}, so they do not multiply (SDK retries × runctl
 * retries), and a SendCommand that failed with a 5xx or a dropped connection is never sent again
 * by the SDK behind runctl's back (it could run the command twice).
 */
export const AWS_SDK_MAX_ATTEMPTS = 1;

/** The default retry policy of EC2 and SSM calls: 9 HTTP requests at most, about 40 s of pauses at most. */
export const DEFAULT_AWS_RETRY: ResolvedAwsRetryOptions = { retries: 8, minDelayMs: 250, maxDelayMs: 8_000, maxElapsedMs: Number.POSITIVE_INFINITY };

/**
 * Fills in the defaults of {@link AwsRetryOptions}; INVALID_ARGUMENT for a negative or non-finite
 * value (`maxElapsedMs` may be Infinity).
 *
 * @example
 * ```ts
 * resolveAwsRetry({ retries: 2 }); // { retries: 2, minDelayMs: 250, maxDelayMs: 8000, maxElapsedMs: Infinity }
 * ```
 */
export function resolveAwsRetry(options: AwsRetryOptions | undefined, defaults: ResolvedAwsRetryOptions = DEFAULT_AWS_RETRY, label = "retry"): ResolvedAwsRetryOptions {
  const resolved = {
    retries: options?.retries ?? defaults.retries,
    minDelayMs: options?.minDelayMs ?? defaults.minDelayMs,
    maxDelayMs: options?.maxDelayMs ?? defaults.maxDelayMs,
    maxElapsedMs: options?.maxElapsedMs ?? defaults.maxElapsedMs,
  };
  for (const [name, value] of Object.entries(resolved)) {
    const ok = typeof value === "number" && value >= 0 && (Number.isFinite(value) || (name === "maxElapsedMs" && value === Number.POSITIVE_INFINITY));
    if (!ok) throw new RunctlError("INVALID_ARGUMENT", `${label}.${name} must be a finite number >= 0, got ${String(value)}.`);
  }
  return resolved;
}

/**
 * What `client.send` takes as its second argument: the abort signal, when there is one.
 *
 * @example
 * ```ts
 * await client.send(new DescribeVolumesCommand({}), { abortSignal: controller.signal } satisfies AwsHttpOptions);
 * ```
 */
export interface AwsHttpOptions {
  /** No `| undefined`: the SDK's `HttpHandlerOptions.abortSignal` does not accept it (decision 0008). */
  readonly abortSignal?: AbortSignal;
}

/**
 * Options of {@link awsCall}.
 *
 * @example
 * ```ts
 * const o: AwsCallOptions = { retry: resolveAwsRetry({ retries: 3 }), signal };
 * ```
 */
export interface AwsCallOptions {
  /** The retry policy. @defaultValue {@link DEFAULT_AWS_RETRY} */
  readonly retry?: ResolvedAwsRetryOptions | undefined;
  /** Aborts the call and its pauses with ABORTED; handed to the SDK as `abortSignal`. */
  readonly signal?: AbortSignal | undefined;
  /**
   * Which failures are repeated. A call that must not run twice (SendCommand) repeats only
   * throttling, which AWS refused before doing anything.
   * @defaultValue {@link isTransientAwsError}
   */
  readonly retryWhen?: ((err: unknown) => boolean) | undefined;
  /**
   * Turns the last failure into the error thrown. `retried` is whether it was a failure
   * `retryWhen` accepted (so the retries ran out).
   * @defaultValue `cloudError(err, operation)`
   */
  readonly giveUp?: ((err: unknown, facts: { readonly attempts: number; readonly elapsedMs: number; readonly retried: boolean }) => Error) | undefined;
  /** Turns an abort into the error thrown. @defaultValue ABORTED ("The operation was aborted.") */
  readonly onAbort?: ((err: unknown, signal: AbortSignal) => Error) | undefined;
  /** Lets the process exit during a pause (best-effort cleanup calls). @defaultValue false */
  readonly unref?: boolean | undefined;
}

/**
 * Runs one AWS API call (`attempt` gets the options to hand to `client.send`, with the abort
 * signal), repeating it while `retryWhen` says so and the retry policy allows. This is runctl's
 * only AWS retry loop. A {@link RunctlError} thrown by `attempt` passes through untouched; an aborted
 * signal comes out as ABORTED; any other failure as `giveUp(err)` (by default a CLOUD_ERROR, or
 * CAPACITY_UNAVAILABLE, with the AWS code in `details.awsCode`).
 *
 * @example
 * ```ts
 * const out = await awsCall("DescribeVolumes", (http) => client.send(new DescribeVolumesCommand({ VolumeIds: [id] }), http), { signal });
 * ```
 */
export async function awsCall<T>(operation: string, attempt: (http: AwsHttpOptions) => Promise<T>, options: AwsCallOptions = {}): Promise<T> {
  const retry = options.retry ?? DEFAULT_AWS_RETRY;
  const retryWhen = options.retryWhen ?? isTransientAwsError;
  const signal = options.signal;
  const http: AwsHttpOptions = signal ? { abortSignal: signal } : {};
  const started = performance.now();
  let attempts = 0;
  const aborted = (err: unknown, s: AbortSignal): Error => (options.onAbort ? options.onAbort(err, s) : abortError(s));
  if (signal?.aborted) throw aborted(signal.reason, signal);
  try {
    return await pRetry(
      async () => {
        attempts++;
        return await attempt(http);
      },
      {
        retries: retry.retries,
        minTimeout: retry.minDelayMs,
        maxTimeout: Math.max(retry.minDelayMs, retry.maxDelayMs),
        maxRetryTime: retry.maxElapsedMs,
        factor: 2,
        randomize: true,
        unref: options.unref ?? false,
        signal,
        shouldRetry: ({ error }) => !(error instanceof RunctlError) && !signal?.aborted && retryWhen(error),
      },
    );
  } catch (err) {
    if (signal?.aborted) throw aborted(err, signal);
    if (err instanceof RunctlError) throw err;
    const facts = { attempts, elapsedMs: performance.now() - started, retried: retryWhen(err) };
    return Promise.reject(options.giveUp ? options.giveUp(err, facts) : cloudError(err, operation));
  }
}
