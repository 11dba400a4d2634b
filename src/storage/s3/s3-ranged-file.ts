import { write as fsWrite } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import type { Readable } from "node:stream";
import { RunctlError } from "../../errors/runctl-error.js";
import { LocalWriteError } from "../download-to-file.js";
import { resumeOrEnd, type BodyResumePolicy } from "./s3-errors.js";
import type { RangedSource } from "./s3-ranged-stream.js";

/** Settings of {@link writeRangesToFile}. */
export interface RangedFileOptions extends BodyResumePolicy, RangedSource {
  /** Where the bytes go, each at its own offset. */
  readonly file: FileHandle;
}

/** Bytes of one body's chunks that may wait on the disk at once. */
const WRITES_IN_FLIGHT_BYTES = 4 * 1024 * 1024;

/** A body error (resumable), as opposed to a failed request (already retried by the caller). */
class BodyFailure {
  /** `pos`: where the body's written bytes end, the byte to resume from. */
  constructor(
    readonly error: unknown,
    readonly pos: number,
  ) {}
}

/**
 * Writes an object into `file` as parallel ranged GETs, each range's bytes at their own offset as
 * they arrive: nothing is held for ordering, so memory is the bodies' socket buffers and the
 * chunks waiting on the disk (a reader of {@link RangedObjectStream} would hold whole ranges). A range
 * whose body drops is re-requested from the byte where it stopped (at most `maxResumes` times in
 * all). On any failure every other range is stopped and its writes settle before this rejects, so
 * the caller may remove the file at once. Resolves with the bytes written (= `totalBytes`). A failed
 * write of the file (a full disk) rejects with a {@link LocalWriteError}, every other failure with a
 * RunctlError.
 */
export async function writeRangesToFile(options: RangedFileOptions): Promise<number> {
  const { first, firstLength, totalBytes, rangeSize, concurrency, fetch, file, signal } = options;
  const bodies = new Set<Readable>();
  let next = firstLength;
  let resumes = 0;
  let written = 0;
  let failure: { readonly error: unknown } | undefined;
  const fail = (error: unknown): void => {
    failure ??= { error };
    for (const body of bodies) body.destroy();
  };
  const onAbort = (): void => fail(options.onAbort?.());
  signal?.addEventListener("abort", onAbort, { once: true });

  /**
   * Reads one body into `[pos, end)`, each chunk written at its offset without waiting for the
   * write (awaiting each write pauses the socket: about a third more CPU), with at most
   * {@link WRITES_IN_FLIGHT_BYTES} of this body's chunks waiting on the disk. Returns where the
   * body's bytes end once every write of them settled; a failed write fails the download.
   */
  const drain = async (body: Readable, pos: number, end: number): Promise<number> => {
    bodies.add(body);
    const pending = new Set<Promise<void>>();
    let pendingBytes = 0;
    let writeError: { readonly error: unknown } | undefined;
    let bodyError: { readonly error: unknown } | undefined;
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        if (failure || writeError) break;
        if (pos + chunk.length > end) {
          throw options.toError(new Error(`the server sent more than the ${end - pos} bytes left of a range ending at byte ${end - 1}`));
        }
        const write = new Promise<void>((resolve) =>
          fsWrite(file.fd, chunk, 0, chunk.length, pos, (err) => {
            if (err) writeError ??= { error: err };
            else written += chunk.length;
            pendingBytes -= chunk.length;
            pending.delete(write);
            resolve();
          }),
        );
        pending.add(write);
        pendingBytes += chunk.length;
        pos += chunk.length;
        while (pendingBytes > WRITES_IN_FLIGHT_BYTES) await Promise.race(pending);
      }
    } catch (err) {
      bodyError = { error: err };
    } finally {
      bodies.delete(body);
      body.destroy();
    }
    // Every write of this body settles before the range resumes or the download fails.
    await Promise.all(pending);
    // The local file's error (a full disk), not the server's: the caller names the file.
    if (writeError) throw new LocalWriteError(writeError.error);
    if (bodyError) throw bodyError.error instanceof RunctlError ? bodyError.error : new BodyFailure(bodyError.error, pos);
    return pos;
  };

  /** Fetches and writes `[start, end)`, resuming a dropped body from the byte where it stopped. */
  const range = async (start: number, end: number, body: Readable | undefined): Promise<void> => {
    let pos = start;
    for (;;) {
      if (failure) return;
      try {
        pos = await drain(body ?? (await fetch(pos, end - 1)), pos, end);
        body = undefined;
        if (failure || pos === end) return;
        throw new BodyFailure(Object.assign(new Error(`the connection closed ${end - pos} bytes short of byte ${end - 1}`), { code: "ECONNRESET" }), pos);
      } catch (err) {
        body = undefined;
        // An abort has set `failure` already: its listener runs before any request or body fails.
        if (failure) return;
        if (!(err instanceof BodyFailure)) throw err instanceof RunctlError || err instanceof LocalWriteError ? err : options.toError(err);
        pos = err.pos;
        const outcome = resumeOrEnd(err.error, resumes, options);
        if (outcome !== "resume") throw outcome.error;
        resumes++;
      }
    }
  };

  const lane = async (firstBody: Readable | undefined): Promise<void> => {
    try {
      if (firstBody) await range(0, firstLength, firstBody);
      while (!failure && next < totalBytes) {
        const start = next;
        next = Math.min(totalBytes, start + rangeSize);
        await range(start, next, undefined);
      }
    } catch (err) {
      fail(err);
    }
  };

  try {
    if (signal?.aborted) fail(options.onAbort?.());
    await Promise.all(Array.from({ length: Math.max(1, concurrency) }, (_, i) => lane(i === 0 ? first : undefined)));
  } finally {
    signal?.removeEventListener("abort", onAbort);
    // Unread when the download failed or was aborted before its lane reached it.
    first.destroy();
  }
  if (failure) throw failure.error;
  return written;
}
