import { RunctlError, abortError } from "../errors/runctl-error.js";
import { isThrottlingError } from "./aws-errors.js";
import type { AwsHttpOptions } from "./aws-call.js";

/**
 * How often a wait re-asks the cloud: the first pause, then doubled (with up to 20% jitter so many
 * waiters do not ask in lockstep) up to the longest pause.
 *
 * @example
 * ```ts
 * ebsVolumes({ region: "us-east-1", poll: { initialMs: 500, maxMs: 5_000 } });
 * ```
 */
export interface PollOptions {
  /** The first pause between two checks. @defaultValue 1000 */
  readonly initialMs?: number | undefined;
  /** The longest pause between two checks. @defaultValue 15000 */
  readonly maxMs?: number | undefined;
}

/**
 * {@link PollOptions} with every default filled in.
 *
 * @example
 * ```ts
 * const poll: ResolvedPollOptions = resolvePollOptions({ initialMs: 500 });
 * ```
 */
export interface ResolvedPollOptions {
  readonly initialMs: number;
  readonly maxMs: number;
}

/**
 * Fills in the defaults of {@link PollOptions}; INVALID_ARGUMENT for a negative or non-finite value.
 *
 * @example
 * ```ts
 * resolvePollOptions({ initialMs: 10 }); // { initialMs: 10, maxMs: 15000 }
 * ```
 */
export function resolvePollOptions(options: PollOptions | undefined, defaults: ResolvedPollOptions = { initialMs: 1_000, maxMs: 15_000 }): ResolvedPollOptions {
  const resolved = { initialMs: options?.initialMs ?? defaults.initialMs, maxMs: options?.maxMs ?? defaults.maxMs };
  for (const [name, value] of Object.entries(resolved)) {
    if (!Number.isFinite(value) || value < 0) throw new RunctlError("INVALID_ARGUMENT", `poll.${name} must be a finite number >= 0, got ${String(value)}.`);
  }
  return { initialMs: resolved.initialMs, maxMs: Math.max(resolved.maxMs, resolved.initialMs) };
}

/**
 * Sleeps `ms` milliseconds; rejects with ABORTED as soon as `signal` fires.
 *
 * @example
 * ```ts
 * await sleepMs(250, controller.signal);
 * ```
 */
export function sleepMs(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(abortError(signal));
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortError(signal!));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, Math.max(0, ms));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * The pause before check number `attempt` (0-based): exponential, capped, with jitter.
 *
 * @example
 * ```ts
 * backoffDelayMs(3, { initialMs: 1000, maxMs: 15000 }); // about 6400–8000
 * ```
 */
export function backoffDelayMs(attempt: number, poll: ResolvedPollOptions): number {
  const base = Math.min(poll.maxMs, poll.initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(base * (0.8 + Math.random() * 0.2));
}

/**
 * Options of {@link pollUntil}.
 *
 * @example
 * ```ts
 * const o: PollUntilOptions = { timeoutMs: 60_000, poll: { initialMs: 1000 }, describe: () => "the volume" };
 * ```
 */
export interface PollUntilOptions {
  /** Give up after this long. */
  readonly timeoutMs: number;
  /** Pauses between checks. @defaultValue `{ initialMs: 1000, maxMs: 15000 }` */
  readonly poll?: PollOptions | undefined;
  /** Aborts the wait with ABORTED; handed to each check for the SDK's `abortSignal`. */
  readonly signal?: AbortSignal | undefined;
  /** What is being waited for, for the default PROVISION_TIMEOUT message. */
  readonly describe?: (() => string) | undefined;
  /** Extra facts for the default timeout error's `details`. */
  readonly details?: Readonly<Record<string, unknown>> | undefined;
  /** The error thrown at the timeout (a machine that never answers is MACHINE_NOT_READY). @defaultValue PROVISION_TIMEOUT */
  readonly onTimeout?: (() => Error) | undefined;
}

/**
 * runctl's one AWS waiter: calls `check` (with the options for `client.send`, carrying the abort
 * signal) until it returns a value other than `undefined`, pausing with bounded exponential backoff
 * between calls. A raw throttling error from `check` slows the wait down instead of ending it; any
 * other error ends it. At the timeout, `onTimeout()` (default PROVISION_TIMEOUT) is thrown.
 *
 * @example
 * ```ts
 * const vol = await pollUntil(async (http) => (await describe(id, http))?.state === "available" ? true : undefined,
 *   { timeoutMs: 300_000, describe: () => `${id} to be available` });
 * ```
 */
export async function pollUntil<T>(check: (http: AwsHttpOptions) => Promise<T | undefined>, options: PollUntilOptions): Promise<T> {
  const poll = resolvePollOptions(options.poll);
  const signal = options.signal;
  const http: AwsHttpOptions = signal ? { abortSignal: signal } : {};
  const deadline = performance.now() + options.timeoutMs;
  for (let attempt = 0; ; attempt++) {
    if (signal?.aborted) throw abortError(signal);
    try {
      const value = await check(http);
      if (value !== undefined) return value;
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      if (!isThrottlingError(err)) throw err;
      attempt += 1; // throttled: back off one step further
    }
    const left = deadline - performance.now();
    if (left <= 0) {
      if (options.onTimeout) throw options.onTimeout();
      throw new RunctlError("PROVISION_TIMEOUT", `Timed out after ${options.timeoutMs} ms waiting for ${options.describe?.() ?? "AWS"}.`, {
        retryable: true,
        details: { timeoutMs: options.timeoutMs, ...options.details },
      });
    }
    await sleepMs(Math.min(left, backoffDelayMs(attempt, poll)), signal);
  }
}
