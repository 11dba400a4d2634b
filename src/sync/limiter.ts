/**
 * Runs async tasks with at most `concurrency` in flight, so a walk over 50,000 files keeps a bounded
 * number of open file descriptors and pending fs requests.
 *
 * @defaultValue no default: `concurrency` is required and must be at least 1
 * @example
 * ```ts
 * const limit = createLimiter(16);
 * const sizes = await Promise.all(paths.map((p) => limit(() => stat(p).then((s) => s.size))));
 * ```
 */
export function createLimiter(concurrency: number): <T>(task: () => Promise<T>) => Promise<T> {
  const max = Math.max(1, Math.floor(concurrency));
  let active = 0;
  const waiting: Array<() => void> = [];
  // A finishing task hands its slot straight to the next waiter, so a newcomer cannot slip in between.
  const release = (): void => {
    const next = waiting.shift();
    if (next) next();
    else active--;
  };
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (active >= max) await new Promise<void>((wake) => waiting.push(wake));
    else active++;
    try {
      return await task();
    } finally {
      release();
    }
  };
}
