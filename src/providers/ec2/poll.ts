import { abortError } from "../../errors/runctl-error.js";
import { isThrottlingError } from "../../errors/cloud-error.js";
import { backoffDelayMs, resolvePollOptions, sleepMs } from "./backoff.js";
import { ec2Call, resolveEc2Retry } from "./ec2-call.js";

/** Options of {@link pollUntil}. */
export interface PollOptions {
  /** First wait between checks; doubles (with jitter) up to `maxIntervalMs`. */
  readonly intervalMs: number;
  /** Longest wait between checks. @defaultValue 15000 */
  readonly maxIntervalMs?: number;
  /** Give up after this long: `onTimeout` is thrown. */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal | undefined;
}

/**
 * Checks until `check` returns a value (not undefined), with the shared bounded backoff
 * (./backoff.ts). Unlike that module's `pollUntil`, the timeout error is the caller's (a machine
 * that never answers is MACHINE_NOT_READY, not a generic timeout), and throttling errors from a
 * check slow the loop down instead of failing it.
 *
 * @example
 * ```ts
 * const state = await pollUntil(async () => (await stateOf(id)) === "running" ? "running" : undefined, { intervalMs: 2000, timeoutMs: 600_000 }, () => timeoutError());
 * ```
 */
export async function pollUntil<T>(check: () => Promise<T | undefined>, options: PollOptions, onTimeout: () => Error): Promise<T> {
  const poll = resolvePollOptions({ initialMs: options.intervalMs, maxMs: options.maxIntervalMs ?? 15_000 });
  const deadline = Date.now() + options.timeoutMs;
  for (let attempt = 0; ; attempt++) {
    if (options.signal?.aborted) throw abortError(options.signal);
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      if (!isThrottlingError(err)) throw err;
      attempt += 1; // throttled: back off one step further
    }
    const left = deadline - Date.now();
    if (left <= 0) throw onTimeout();
    await sleepMs(Math.min(left, backoffDelayMs(attempt, poll)), options.signal);
  }
}

/**
 * Sends an AWS call through the shared {@link ec2Call}: throttling (RequestLimitExceeded) and 5xx
 * errors are repeated with backoff beyond the SDK's own retries; anything else comes out as
 * `cloudError` (the AWS code in `details.awsCode`, the SDK error as `cause`).
 *
 * @example
 * ```ts
 * const out = await awsCall("DescribeInstances", () => ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] })), signal);
 * ```
 */
export function awsCall<T>(operation: string, call: () => Promise<T>, signal?: AbortSignal, attempts = 5): Promise<T> {
  return ec2Call(operation, () => call(), resolveEc2Retry({ retries: attempts - 1, minDelayMs: 500 }), signal);
}
