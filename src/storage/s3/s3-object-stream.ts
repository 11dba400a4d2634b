import { Readable, finished } from "node:stream";
import { resumeOrEnd, type BodyResumePolicy } from "./s3-errors.js";

/** Settings of {@link ResumingObjectStream}. */
export interface ResumingObjectStreamOptions extends BodyResumePolicy {
  /** The first response's body. */
  readonly first: Readable;
  /** Content-Length of the whole object, when known: a body that ends short of it is resumed. */
  readonly totalBytes: number | undefined;
  /** Opens the object again from byte `offset` (a ranged GET pinned to the same ETag). */
  readonly reopen: (offset: number) => Promise<Readable>;
}

/**
 * An object's bytes as one Node Readable that streams (backpressure passes through to the socket)
 * and survives a dropped connection: when the body fails with a retryable error (ECONNRESET, a
 * premature close, a short body) it re-requests the rest with `Range: bytes=<offset>-`, at most
 * `maxResumes` times.
 *
 * @example
 * ```ts
 * const stream = new ResumingObjectStream({ first: out.Body as Readable, totalBytes: out.ContentLength,
 *   reopen: (offset) => getRange(offset), maxResumes: 10, toError: (e) => toStorageError(e, ctx) });
 * ```
 */
export class ResumingObjectStream extends Readable {
  private body: Readable | undefined;
  private offset = 0;
  private resumes = 0;
  private readonly options: ResumingObjectStreamOptions;
  private readonly abortListener: (() => void) | undefined;

  constructor(options: ResumingObjectStreamOptions) {
    super({ highWaterMark: 1024 * 1024 });
    this.options = options;
    if (options.signal) {
      const signal = options.signal;
      this.abortListener = () => this.destroy(options.onAbort?.());
      signal.addEventListener("abort", this.abortListener, { once: true });
    }
    this.attach(options.first);
    // Aborted between the response and now: the listener above will never fire.
    if (options.signal?.aborted) this.destroy(options.onAbort?.());
  }

  /** Bytes received so far. */
  get bytesRead(): number {
    return this.offset;
  }

  /** How many times the body was resumed after a dropped connection. */
  get resumeCount(): number {
    return this.resumes;
  }

  private attach(body: Readable): void {
    this.body = body;
    body.on("data", (chunk: Buffer) => {
      this.offset += chunk.length;
      if (!this.push(chunk)) body.pause();
    });
    finished(body, { writable: false }, (err) => {
      if (this.body !== body || this.destroyed) return;
      this.body = undefined;
      const total = this.options.totalBytes;
      if (!err && (total === undefined || this.offset >= total)) {
        this.push(null);
        return;
      }
      this.fail(err ?? Object.assign(new Error(`the connection closed after ${this.offset} of ${total} bytes`), { code: "ECONNRESET" }));
    });
  }

  private fail(err: unknown): void {
    if (this.destroyed) return;
    const outcome = resumeOrEnd(err, this.resumes, this.options);
    if (outcome !== "resume") {
      this.destroy(outcome.error);
      return;
    }
    this.resumes++;
    this.options.reopen(this.offset).then(
      (next) => {
        if (this.destroyed) {
          next.destroy();
          return;
        }
        this.attach(next);
      },
      (reopenError: unknown) => this.destroy(this.options.toError(reopenError)),
    );
  }

  override _read(): void {
    this.body?.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.abortListener) this.options.signal?.removeEventListener("abort", this.abortListener);
    const body = this.body;
    this.body = undefined;
    body?.destroy();
    callback(error);
  }
}
