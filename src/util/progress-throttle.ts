/**
 * A byte count reported at a bounded rate: the first report, then at most one every `intervalMs`,
 * and always the final one (`done >= total`). A count lower than the last one reported is dropped
 * unless the total changed (a retried transfer starts over), so reports never go backwards.
 *
 * @example
 * ```ts
 * const report = createProgressThrottle((done, total) => console.log(`${done}/${total}`));
 * report(0, 100); // printed: the first
 * report(10, 100); // held back: within 250 ms of the last
 * report(100, 100); // printed: the final
 * ```
 */
export function createProgressThrottle(
  report: (done: number, total: number) => void,
  intervalMs = 250,
  now: () => number = () => performance.now(),
): (done: number, total: number) => void {
  let lastAt: number | undefined;
  let lastDone = -1;
  let lastTotal = -1;
  let finished = false;
  return (done, total) => {
    const restart = total !== lastTotal;
    if (!restart && (finished || done < lastDone)) return;
    const final = done >= total;
    const at = now();
    if (!restart && !final && lastAt !== undefined && at - lastAt < intervalMs) return;
    lastAt = at;
    lastDone = done;
    lastTotal = total;
    finished = final;
    report(Math.min(done, total), total);
  };
}
