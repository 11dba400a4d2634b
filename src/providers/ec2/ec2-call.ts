import { RunctlError, abortError } from "../../errors/runctl-error.js";
import { CAPACITY_ERROR_CODES, awsErrorCode, cloudError, isThrottlingError } from "../../errors/cloud-error.js";
import { sleepMs } from "./backoff.js";

/**
 * How runctl repeats an EC2 API call that failed transiently (throttling such as
 * `RequestLimitExceeded`, or an HTTP 5xx), on top of the SDK's own retries. Delays double from
 * `minDelayMs` up to `maxDelayMs`, with jitter.
 *
 * @example
 * ```ts
 * ebsVolumes({ region: "us-east-1", retry: { retries: 8 } });
 * ```
 */
export interface Ec2RetryOptions {
  /** Repeats after the first attempt. @defaultValue 5 */
  readonly retries?: number;
  /** Pause before the first repeat. @defaultValue 250 */
  readonly minDelayMs?: number;
  /** Longest pause between two attempts. @defaultValue 8000 */
  readonly maxDelayMs?: number;
}

/**
 * {@link Ec2RetryOptions} with every default filled in.
 *
 * @example
 * ```ts
 * const retry: ResolvedEc2RetryOptions = resolveEc2Retry(undefined);
 * ```
 */
export type ResolvedEc2RetryOptions = Required<Ec2RetryOptions>;

/**
 * Fills in the defaults of {@link Ec2RetryOptions}; INVALID_ARGUMENT for a negative or non-finite value.
 *
 * @example
 * ```ts
 * resolveEc2Retry({ retries: 2 }); // { retries: 2, minDelayMs: 250, maxDelayMs: 8000 }
 * ```
 */
export function resolveEc2Retry(options: Ec2RetryOptions | undefined): ResolvedEc2RetryOptions {
  const resolved = { retries: options?.retries ?? 5, minDelayMs: options?.minDelayMs ?? 250, maxDelayMs: options?.maxDelayMs ?? 8_000 };
  for (const [name, value] of Object.entries(resolved)) {
    if (!Number.isFinite(value) || value < 0) throw new RunctlError("INVALID_ARGUMENT", `retry.${name} must be a finite number >= 0, got ${String(value)}.`);
  }
  return resolved;
}

/**
 * What `client.send` takes as its second argument: the abort signal, when there is one.
 *
 * @example
 * ```ts
 * await client.send(new DescribeVolumesCommand({}), { abortSignal: controller.signal } satisfies Ec2HttpOptions);
 * ```
 */
export interface Ec2HttpOptions {
  readonly abortSignal?: AbortSignal;
}

/**
 * Whether an AWS error is worth repeating as is: throttling or a server-side (5xx) failure. Capacity
 * errors (InsufficientInstanceCapacity is a 500) are not: the same request fails the same way, and
 * the caller should try another zone or market instead.
 *
 * @example
 * ```ts
 * if (isTransientAwsError(err)) await sleepMs(500);
 * ```
 */
export function isTransientAwsError(err: unknown): boolean {
  const status = (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
  const code = awsErrorCode(err);
  if (code !== undefined && CAPACITY_ERROR_CODES.has(code)) return false;
  return isThrottlingError(err) || (status !== undefined && status >= 500);
}

/**
 * Runs one EC2 API call (`attempt` gets the options to hand to `client.send`, with the abort signal), repeating it on
 * throttling and 5xx errors within `retry`. Any other failure comes out as a {@link RunctlError}
 * (`cloudError(err, operation)`: CLOUD_ERROR with the AWS code in `details.awsCode`); an aborted
 * signal comes out as ABORTED.
 *
 * @example
 * ```ts
 * const out = await ec2Call("DescribeVolumes", (http) => client.send(new DescribeVolumesCommand({ VolumeIds: [id] }), http), retry, signal);
 * ```
 */
export async function ec2Call<T>(operation: string, attempt: (http: Ec2HttpOptions) => Promise<T>, retry: ResolvedEc2RetryOptions, signal?: AbortSignal): Promise<T> {
  const http: Ec2HttpOptions = signal ? { abortSignal: signal } : {};
  for (let n = 0; ; n++) {
    if (signal?.aborted) throw abortError(signal);
    try {
      return await attempt(http);
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      if (err instanceof RunctlError) throw err;
      if (n >= retry.retries || !isTransientAwsError(err)) throw cloudError(err, operation);
      const delay = Math.min(retry.maxDelayMs, retry.minDelayMs * 2 ** n);
      await sleepMs(delay * (0.5 + Math.random() * 0.5), signal);
    }
  }
}

/**
 * The AWS error code a RunctlError from {@link ec2Call} carries (`details.awsCode`), if any.
 *
 * @example
 * ```ts
 * if (awsCodeOf(err) === "InvalidVolume.NotFound") return undefined;
 * ```
 */
export function awsCodeOf(err: unknown): string | undefined {
  if (!(err instanceof RunctlError)) return undefined;
  const code = err.details["awsCode"];
  return typeof code === "string" ? code : undefined;
}
