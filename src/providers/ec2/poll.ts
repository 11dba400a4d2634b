import { setTimeout as sleep } from "node:timers/promises";
import { abortError, throwIfAborted } from "../../errors/runctl-error.js";
import { cloudError, isThrottlingError } from "../../errors/cloud-error.js";

/** Options of {@link pollUntil}. */
export interface PollOptions {
  /** First wait between checks; doubles up to `maxIntervalMs`. */
  readonly intervalMs: number;
  /** Longest wait between checks. @defaultValue 15000 */
  readonly maxIntervalMs?: number;
  /** Give up after this long: `onTimeout` is thrown. */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal | undefined;
}

/**
 * Checks until `check` returns a value (not undefined), with bounded exponential backoff. Throttling
 * errors from a check slow the loop down instead of failing it.
 *
 * @example
 * ```ts
 * const state = await pollUntil(async () => (await stateOf(id)) === "running" ? "running" : undefined, { intervalMs: 2000, timeoutMs: 600_000 }, () => timeoutError());
 * ```
 */
export async function pollUntil<T>(check: () => Promise<T | undefined>, options: PollOptions, onTimeout: () => Error): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  let interval = options.intervalMs;
  const max = options.maxIntervalMs ?? 15_000;
  for (;;) {
    throwIfAborted(options.signal);
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      if (!isThrottlingError(err)) throw err;
      interval = Math.min(max, interval * 2);
    }
    const left = deadline - Date.now();
    if (left <= 0) throw onTimeout();
    try {
      await sleep(Math.min(interval, left), undefined, options.signal ? { signal: options.signal } : {});
    } catch (err) {
      throw options.signal ? abortError(options.signal) : err;
    }
    interval = Math.min(max, interval * 2);
  }
}

/**
 * Sends an AWS call, retrying throttling (RequestLimitExceeded) with backoff beyond the SDK's own
 * retries, and wrapping any other failure with {@link cloudError}.
 *
 * @example
 * ```ts
 * const out = await awsCall("DescribeInstances", () => ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] })), signal);
 * ```
 */
export async function awsCall<T>(operation: string, call: () => Promise<T>, signal?: AbortSignal, attempts = 5): Promise<T> {
  let delayMs = 500;
  for (let attempt = 1; ; attempt++) {
    throwIfAborted(signal);
    try {
      return await call();
    } catch (err) {
      if (!isThrottlingError(err) || attempt >= attempts) throw cloudError(err, operation);
      try {
        await sleep(delayMs + Math.floor(Math.random() * delayMs), undefined, signal ? { signal } : {});
      } catch (sleepErr) {
        throw signal ? abortError(signal) : sleepErr;
      }
      delayMs = Math.min(8000, delayMs * 2);
    }
  }
}
