import { Readable, finished } from "node:stream";
import { resumeOrEnd, type BodyResumePolicy } from "./s3-errors.js";

/** An object read as ranged GETs: the first response, and how to fetch the rest. */
export interface RangedSource {
  /** The first response's body: bytes `0` to `firstLength - 1` of the object. */
  readonly first: Readable;
  /** How many bytes `first` carries. */
  readonly firstLength: number;
  /** Size of the whole object. */
  readonly totalBytes: number;
  /** Bytes per ranged GET after the first. */
  readonly rangeSize: number;
  /** Ranges in flight at once (the first included). */
  readonly concurrency: number;
  /** Fetches bytes `start` to `end` (inclusive), pinned to the first response's ETag; rejects when the object changed. */
  readonly fetch: (start: number, end: number) => Promise<Readable>;
}

/** Settings of {@link RangedObjectStream}. */
export interface RangedObjectStreamOptions extends BodyResumePolicy, RangedSource {}

/** One range of the object: its bytes as received, until they are pushed in order. */
interface Range {
  readonly start: number;
  /** Exclusive. */
  readonly end: number;
  received: number;
  readonly chunks: (Buffer | undefined)[];
  /** Index of the next chunk to push. */
  taken: number;
  body: Readable | undefined;
  done: boolean;
}

/**
 * An object's bytes as one Node Readable, fetched as parallel ranged GETs (`concurrency` ranges of
 * `rangeSize` bytes in flight) and emitted strictly in order. Memory stays bounded by about
 * `concurrency × rangeSize` bytes: a new range is requested only once the oldest has been handed
 * to the reader, so a slow reader slows the downloads. A range whose body drops mid-way is
 * re-requested from the byte where it stopped (at most `maxResumes` times in all); every range is
 * pinned to the object's ETag, so a changed object fails the stream instead of mixing bytes.
 *
 * @example
 * ```ts
 * const stream = new RangedObjectStream({ first: out.Body as Readable, firstLength: 8 << 20, totalBytes: size,
 *   rangeSize: 8 << 20, concurrency: 4, fetch: (start, end) => getRange(start, end), maxResumes: 10,
 *   toError: (e) => toStorageError(e, ctx) });
 * ```
 */
export class RangedObjectStream extends Readable {
  private readonly options: RangedObjectStreamOptions;
  /** Ranges requested and not yet fully pushed, in order: the first is the one being emitted. */
  private readonly ranges: Range[] = [];
  /** First byte no range covers yet. */
  private next: number;
  private pushed = 0;
  private resumes = 0;
  private wanted = true;
  private readonly abortListener: (() => void) | undefined;

  constructor(options: RangedObjectStreamOptions) {
    super({ highWaterMark: 1024 * 1024 });
    this.options = options;
    this.next = options.firstLength;
    const first = this.range(0, options.firstLength);
    this.attach(first, options.first);
    this.fill();
    if (options.signal) {
      const signal = options.signal;
      this.abortListener = () => this.destroy(options.onAbort?.());
      signal.addEventListener("abort", this.abortListener, { once: true });
      // Aborted between the response and now: the listener above will never fire.
      if (signal.aborted) this.destroy(options.onAbort?.());
    }
  }

  /** Bytes handed to the reader so far. */
  get bytesRead(): number {
    return this.pushed;
  }

  /** How many times a range was resumed after a dropped connection. */
  get resumeCount(): number {
    return this.resumes;
  }

  private range(start: number, end: number): Range {
    const range: Range = { start, end, received: 0, chunks: [], taken: 0, body: undefined, done: false };
    this.ranges.push(range);
    return range;
  }

  /** Requests ranges until `concurrency` are in flight or the object is covered. */
  private fill(): void {
    const { totalBytes, rangeSize, concurrency } = this.options;
    while (!this.destroyed && this.ranges.length < concurrency && this.next < totalBytes) {
      const start = this.next;
      this.next = Math.min(totalBytes, start + rangeSize);
      this.open(this.range(start, this.next));
    }
  }

  private open(range: Range): void {
    this.options.fetch(range.start + range.received, range.end - 1).then(
      (body) => {
        if (this.destroyed) body.destroy();
        else this.attach(range, body);
      },
      (err: unknown) => this.destroy(this.options.signal?.aborted ? this.options.onAbort?.() : this.options.toError(err)),
    );
  }

  private attach(range: Range, body: Readable): void {
    range.body = body;
    body.on("data", (chunk: Buffer) => {
      if (range.body !== body) return;
      range.received += chunk.length;
      range.chunks.push(chunk);
      if (range.received > range.end - range.start) {
        range.body = undefined;
        body.destroy();
        this.destroy(this.options.toError(new Error(`the server sent more than the ${range.end - range.start} bytes of range ${range.start}-${range.end - 1}`)));
        return;
      }
      if (range === this.ranges[0]) this.drain();
    });
    finished(body, { writable: false }, (err) => {
      if (range.body !== body || this.destroyed) return;
      range.body = undefined;
      if (!err && range.received === range.end - range.start) {
        range.done = true;
        if (range === this.ranges[0]) this.drain();
        return;
      }
      this.retryRange(range, err ?? Object.assign(new Error(`the connection closed after ${range.received} of ${range.end - range.start} bytes of range ${range.start}-${range.end - 1}`), { code: "ECONNRESET" }));
    });
  }

  /** Re-requests the rest of a range whose body failed, when the failure is transient. */
  private retryRange(range: Range, err: unknown): void {
    if (this.destroyed) return;
    const outcome = resumeOrEnd(err, this.resumes, this.options);
    if (outcome !== "resume") {
      this.destroy(outcome.error);
      return;
    }
    this.resumes++;
    this.open(range);
  }

  /** Pushes the oldest range's bytes while the reader wants more; moves on when a range is done. */
  private drain(): void {
    while (this.wanted && !this.destroyed) {
      const head = this.ranges[0];
      if (!head) {
        this.push(null);
        return;
      }
      if (head.taken < head.chunks.length) {
        const chunk = head.chunks[head.taken]!;
        head.chunks[head.taken++] = undefined;
        this.pushed += chunk.length;
        this.wanted = this.push(chunk);
        continue;
      }
      if (!head.done) return;
      this.ranges.shift();
      this.fill();
    }
  }

  override _read(): void {
    this.wanted = true;
    this.drain();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.abortListener) this.options.signal?.removeEventListener("abort", this.abortListener);
    for (const range of this.ranges.splice(0)) {
      const body = range.body;
      range.body = undefined;
      body?.destroy();
    }
    callback(error);
  }
}
