import type { ExecHandle, ExecResult, OutputChunk } from "../types.js";
import { TailBuffer } from "../../util/tail-buffer.js";

/**
 * How a running exec is told to slow down or go on (flow control on the SSH channel).
 *
 * @example
 * ```ts
 * handle.setFlowControl({ pause: () => channel.pause(), resume: () => channel.resume() });
 * ```
 */
export interface FlowControl {
  pause(): void;
  resume(): void;
}

/** Unread bytes above which the producer is paused while someone iterates. */
const HIGH_WATER = 4 * 1024 * 1024;
/** Unread bytes below which it is resumed. */
const LOW_WATER = 1024 * 1024;
/** Most unread bytes kept for an iterator that has not started yet (oldest chunks dropped beyond). */
const MAX_UNREAD_WITHOUT_READER = 16 * 1024 * 1024;

/**
 * The {@link ExecHandle} of one remote command: collects output (queue for iteration, tails, whole
 * stdout) and settles once. Iterate it once; chunks that arrive before iteration starts are kept (up to
 * 16 MiB) unless the handle was already awaited without an iterator.
 *
 * @example
 * ```ts
 * const h = new RemoteExecHandle(65536, true);
 * h.push("stdout", Buffer.from("hi\n"));
 * h.succeed({ exitCode: 0, signal: null, durationMs: 5 });
 * (await h).stdout; // "hi\n"
 * ```
 */
export class RemoteExecHandle implements ExecHandle {
  private readonly promise: Promise<ExecResult>;
  private resolvePromise!: (r: ExecResult) => void;
  private rejectPromise!: (e: unknown) => void;
  private readonly stdoutTail: TailBuffer;
  private readonly stderrTail: TailBuffer;
  private readonly stdoutAll: Buffer[] = [];
  private readonly queue: OutputChunk[] = [];
  private queuedBytes = 0;
  private waiter: (() => void) | undefined;
  private done = false;
  private failure: unknown;
  private iterating = false;
  private awaited = false;
  private paused = false;
  private flow: FlowControl | undefined;

  /**
   * @param tailBytes - Bytes kept per stream for the tails.
   * @param captureStdout - Keep the whole stdout.
   */
  constructor(
    tailBytes: number,
    private readonly captureStdout: boolean,
  ) {
    this.stdoutTail = new TailBuffer(tailBytes);
    this.stderrTail = new TailBuffer(tailBytes);
    this.promise = new Promise<ExecResult>((resolve, reject) => {
      this.resolvePromise = resolve;
      this.rejectPromise = reject;
    });
    this.promise.catch(() => {});
  }

  /** Whether the handle has settled. */
  get settled(): boolean {
    return this.done;
  }

  /** Connects flow control (called once the channel is open). */
  setFlowControl(flow: FlowControl): void {
    this.flow = flow;
  }

  /** Records a chunk of output. */
  push(stream: "stdout" | "stderr", data: Buffer): void {
    if (this.done) return;
    if (stream === "stdout") {
      this.stdoutTail.push(data);
      if (this.captureStdout) this.stdoutAll.push(data);
    } else {
      this.stderrTail.push(data);
    }
    if (!this.iterating && this.awaited) return; // nobody will read chunks
    this.queue.push({ stream, data });
    this.queuedBytes += data.length;
    if (this.iterating) {
      if (this.queuedBytes > HIGH_WATER && !this.paused && this.flow) {
        this.paused = true;
        this.flow.pause();
      }
    } else {
      while (this.queuedBytes > MAX_UNREAD_WITHOUT_READER && this.queue.length > 1) {
        this.queuedBytes -= this.queue.shift()!.data.length;
      }
    }
    this.wake();
  }

  /** Settles with the result of a command that exited. */
  succeed(status: { exitCode: number | null; signal: string | null; durationMs: number }): void {
    if (this.done) return;
    this.done = true;
    this.resolvePromise({
      ...status,
      stdout: this.captureStdout ? Buffer.concat(this.stdoutAll).toString("utf8") : "",
      stdoutTail: this.stdoutTail.toString(),
      stderrTail: this.stderrTail.toString(),
    });
    this.stdoutAll.length = 0;
    this.wake();
  }

  /** Settles with a failure; iterators throw it after the chunks already queued. */
  fail(error: unknown): void {
    if (this.done) return;
    this.done = true;
    this.failure = error;
    this.stdoutAll.length = 0;
    this.rejectPromise(error);
    this.wake();
  }

  /** Current output tails (for error messages). */
  tails(): { stdoutTail: string; stderrTail: string } {
    return { stdoutTail: this.stdoutTail.toString(), stderrTail: this.stderrTail.toString() };
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  then<TResult1 = ExecResult, TResult2 = never>(
    onfulfilled?: ((value: ExecResult) => TResult1 | PromiseLike<TResult1>) | null,
    onrejected?: ((reason: unknown) => TResult2 | PromiseLike<TResult2>) | null,
  ): PromiseLike<TResult1 | TResult2> {
    this.awaited = true;
    if (!this.iterating) {
      this.queue.length = 0;
      this.queuedBytes = 0;
    }
    return this.promise.then(onfulfilled, onrejected);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<OutputChunk> {
    this.iterating = true;
    try {
      for (;;) {
        const chunk = this.queue.shift();
        if (chunk) {
          this.queuedBytes -= chunk.data.length;
          if (this.paused && this.queuedBytes < LOW_WATER) {
            this.paused = false;
            this.flow?.resume();
          }
          yield chunk;
          continue;
        }
        if (this.done) {
          if (this.failure !== undefined) throw this.failure;
          return;
        }
        await new Promise<void>((resolve) => {
          this.waiter = resolve;
        });
      }
    } finally {
      this.iterating = false;
      if (this.paused) {
        this.paused = false;
        this.flow?.resume();
      }
    }
  }
}
