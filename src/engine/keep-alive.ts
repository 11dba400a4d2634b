import type { Machine, Provider } from "../providers/types.js";

/** How often {@link keepMachineAlive} renews when the provider does not say. */
export const DEFAULT_KEEP_ALIVE_EVERY_MS = 600_000;

/**
 * While a run is followed, renews its machine's lease through the provider's optional
 * `keepAlive` (EC2: `runctl:expires-at`), at once and then every `provider.keepAliveEveryMs`, so
 * that a sweep never takes a machine whose run someone follows. A failed renewal is reported once
 * (until one succeeds again) and never stops following.
 *
 * @returns Stops renewing (an answer still in flight is ignored).
 * @example
 * ```ts
 * const stop = keepMachineAlive(provider, machine, (err) => console.warn(err.message));
 * try { await follow(); } finally { stop(); }
 * ```
 */
export function keepMachineAlive(provider: Provider, machine: Machine, onFailure: (error: Error) => void): () => void {
  const renew = provider.keepAlive?.bind(provider);
  if (!renew) return () => {};
  const stopped = new AbortController();
  let reported = false;
  const tick = (): void => {
    renew(machine, { signal: stopped.signal }).then(
      () => {
        reported = false;
      },
      (err: unknown) => {
        if (stopped.signal.aborted || reported) return;
        reported = true;
        onFailure(err instanceof Error ? err : new Error(String(err)));
      },
    );
  };
  tick();
  const timer = setInterval(tick, provider.keepAliveEveryMs ?? DEFAULT_KEEP_ALIVE_EVERY_MS);
  timer.unref();
  return () => {
    clearInterval(timer);
    stopped.abort();
  };
}
