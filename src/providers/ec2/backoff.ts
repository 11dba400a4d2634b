import { RunctlError, abortError } from "../../errors/runctl-error.js";

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
  readonly initialMs?: number;
  /** The longest pause between two checks. @defaultValue 15000 */
  readonly maxMs?: number;
}

/**
 * {@link PollOptions} with every default filled in.
 *
 * @example
 * ```ts
 * const poll: ResolvedPollOptions = resolvePollOptions({ initialMs: 500 });
 * ```
 */
export type ResolvedPollOptions = Required<PollOptions>;

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
 * const o: PollUntilOptions = { timeoutMs: 60_000, poll: resolvePollOptions(undefined), describe: () => "the volume" };
 * ```
 */
export interface PollUntilOptions {
  /** Give up after this long: PROVISION_TIMEOUT. */
  readonly timeoutMs: number;
  /** Pauses between checks. */
  readonly poll: ResolvedPollOptions;
  /** Aborts the wait with ABORTED. */
  readonly signal?: AbortSignal | undefined;
  /** What is being waited for, for the timeout message (called once, at the timeout). */
  readonly describe: () => string;
  /** Extra facts for the timeout error's `details`. */
  readonly details?: Readonly<Record<string, unknown>>;
}

/**
 * Calls `check` until it returns a value other than `undefined`, pausing with bounded exponential
 * backoff between calls; PROVISION_TIMEOUT once `timeoutMs` have passed. Errors thrown by `check`
 * end the wait.
 *
 * @example
 * ```ts
 * const vol = await pollUntil(async () => (await describe(id))?.state === "available" ? true : undefined,
 *   { timeoutMs: 300_000, poll: resolvePollOptions(undefined), describe: () => `${id} to be available` });
 * ```
 */
export async function pollUntil<T>(check: () => Promise<T | undefined>, options: PollUntilOptions): Promise<T> {
  const deadline = performance.now() + options.timeoutMs;
  for (let attempt = 0; ; attempt++) {
    if (options.signal?.aborted) throw abortError(options.signal);
    const value = await check();
    if (value !== undefined) return value;
    const left = deadline - performance.now();
    if (left <= 0) {
      throw new RunctlError("PROVISION_TIMEOUT", `Timed out after ${options.timeoutMs} ms waiting for ${options.describe()}.`, {
        retryable: true,
        details: { timeoutMs: options.timeoutMs, ...options.details },
      });
    }
    await sleepMs(Math.min(left, backoffDelayMs(attempt, options.poll)), options.signal);
  }
}
