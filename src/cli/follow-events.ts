import type { RunEvent, RunResult, TrainingRun } from "../index.js";

/**
 * How following ended: the run's result, or `interrupted` when the signal fired first (this process
 * then detached; the run goes on).
 *
 * @example
 * ```ts
 * if (end.kind === "ended") console.log(end.result.status);
 * ```
 */
export type FollowEnd = { readonly kind: "ended"; readonly result: RunResult } | { readonly kind: "interrupted" };

/**
 * Feeds every event of a run (replayed, then live) to `onEvent` until the run ends, then returns its
 * result. When `signal` fires first, stops following at once and detaches: a Ctrl-C on the CLI
 * never stops the run itself.
 *
 * @param signal - Stops following. @defaultValue never fires
 * @example
 * ```ts
 * const end = await followEvents(Runctl.attach(runId), signal, (e) => console.log(e.type));
 * ```
 */
export async function followEvents(run: TrainingRun, signal: AbortSignal | undefined, onEvent: (event: RunEvent) => void): Promise<FollowEnd> {
  const stop = abortPromise(signal);
  try {
    const events = run[Symbol.asyncIterator]();
    for (;;) {
      const next = await Promise.race([events.next(), stop.promise]);
      if (next === ABORTED) return await detach(run);
      if (next.done) break;
      onEvent(next.value);
    }
    const result = await Promise.race([Promise.resolve(run), stop.promise]);
    if (result === ABORTED) return await detach(run);
    return { kind: "ended", result };
  } finally {
    stop.dispose();
  }
}

const ABORTED = Symbol("aborted");

async function detach(run: TrainingRun): Promise<FollowEnd> {
  // Only this process stops following; the agent on the machine carries on.
  await run.cancel({ strategy: "detach" }).catch(() => {});
  return { kind: "interrupted" };
}

function abortPromise(signal: AbortSignal | undefined): { promise: Promise<typeof ABORTED>; dispose(): void } {
  if (!signal) return { promise: new Promise(() => {}), dispose: () => {} };
  let onAbort = (): void => {};
  const promise = new Promise<typeof ABORTED>((resolve) => {
    onAbort = () => resolve(ABORTED);
    if (signal.aborted) resolve(ABORTED);
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  return { promise, dispose: () => signal.removeEventListener("abort", onAbort) };
}
