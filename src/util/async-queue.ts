/**
 * An unbounded push queue that is async-iterable by many consumers in turn: each `iterate()` call
 * sees every item from the start. Used for output chunks and live events.
 */
export class AsyncQueue<T> {
  private readonly items: T[] = [];
  private waiters: Array<() => void> = [];
  private done = false;
  private failure: unknown = undefined;
  private failed = false;

  push(item: T): void {
    if (this.done) return;
    this.items.push(item);
    this.wake();
  }

  end(error?: unknown): void {
    if (this.done) return;
    this.done = true;
    if (error !== undefined) {
      this.failed = true;
      this.failure = error;
    }
    this.wake();
  }

  get ended(): boolean {
    return this.done;
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  async *iterate(): AsyncGenerator<T> {
    let index = 0;
    for (;;) {
      while (index < this.items.length) yield this.items[index++] as T;
      if (this.done) {
        if (this.failed) throw this.failure;
        return;
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }
}
