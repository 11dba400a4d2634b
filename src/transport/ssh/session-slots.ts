import { abortError } from "../../errors/runctl-error.js";

/**
 * A counting semaphore for the sessions (channels) open on one SSH connection, so runctl never asks a
 * server for more than its `MaxSessions`.
 *
 * @example
 * ```ts
 * const slots = new SessionSlots(10);
 * const release = await slots.acquire();
 * try { await work(); } finally { release(); }
 * ```
 */
export class SessionSlots {
  private used = 0;
  private readonly waiting: { grant: () => void; reject: (e: unknown) => void }[] = [];

  /** @param size - Sessions allowed at once (at least 1). */
  constructor(private readonly size: number) {
    if (!(size >= 1)) throw new RangeError(`maxSessions must be at least 1, got ${size}`);
  }

  /** Waits for a free session; resolves to its release function (idempotent). Rejects with ABORTED. */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const grantRelease = (): (() => void) => {
      let released = false;
      return () => {
        if (released) return;
        released = true;
        this.used--;
        this.next();
      };
    };
    if (this.used < this.size) {
      this.used++;
      return Promise.resolve(grantRelease());
    }
    return new Promise((resolve, reject) => {
      const entry = {
        grant: () => {
          signal?.removeEventListener("abort", onAbort);
          this.used++;
          resolve(grantRelease());
        },
        reject,
      };
      const onAbort = (): void => {
        const i = this.waiting.indexOf(entry);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(abortError(signal!));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiting.push(entry);
    });
  }

  /** Rejects every waiter (the transport is closing). */
  rejectAll(error: unknown): void {
    for (const w of this.waiting.splice(0)) w.reject(error);
  }

  private next(): void {
    if (this.used < this.size) this.waiting.shift()?.grant();
  }
}
