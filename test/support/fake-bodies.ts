import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { RunctlError } from "../../src/errors/runctl-error.js";
import type { BodyResumePolicy } from "../../src/storage/s3/s3-errors.js";
import type { RangedSource } from "../../src/storage/s3/s3-ranged-stream.js";

const KiB = 1024;

/** A deterministic pseudo-random sequence, so a failure repeats. */
export function rng(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s / 2 ** 31;
  };
}

/**
 * A response body of `bytes`, sent in chunks of 1 byte to 96 KiB with random pauses, so ranges
 * finish out of order; with `dropAfter` it fails like a reset connection after that many bytes.
 */
export function fakeBody(bytes: Buffer, random: () => number, dropAfter?: number): Readable {
  async function* chunks(): AsyncGenerator<Buffer> {
    let at = 0;
    while (at < bytes.length) {
      const n = Math.min(bytes.length - at, random() < 0.1 ? 1 + Math.floor(random() * 100) : Math.floor(random() * 96 * KiB) + 1);
      if (dropAfter !== undefined && at + n > dropAfter) {
        yield bytes.subarray(at, dropAfter);
        throw Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
      }
      yield bytes.subarray(at, at + n);
      at += n;
      if (random() < 0.05) await sleep(Math.floor(random() * 4));
    }
  }
  return Readable.from(chunks(), { objectMode: false });
}

/**
 * `object` as fake ranged GETs of `rangeSize` (bodies from {@link fakeBody}, each fetch after a
 * random pause): `drops` maps a range's start to the byte after which its first body fails.
 * `fetched` records each request as `start-end`; resumes are allowed 5 times.
 */
export function fakeRanges(
  object: Buffer,
  options: { readonly rangeSize: number; readonly concurrency: number; readonly seed: number; readonly drops?: Map<number, number>; readonly onFetch?: (start: number) => void },
): { readonly source: RangedSource & BodyResumePolicy; readonly fetched: string[] } {
  const random = rng(options.seed);
  const fetched: string[] = [];
  const first = Math.min(options.rangeSize, object.length);
  return {
    fetched,
    source: {
      first: fakeBody(object.subarray(0, first), random),
      firstLength: first,
      totalBytes: object.length,
      rangeSize: options.rangeSize,
      concurrency: options.concurrency,
      maxResumes: 5,
      toError: (err) => new RunctlError("STORAGE_ERROR", `get failed: ${(err as Error).message}`, { cause: err }),
      fetch: async (start, end) => {
        fetched.push(`${start}-${end}`);
        options.onFetch?.(start);
        await sleep(Math.floor(random() * 3));
        const drop = options.drops?.get(start);
        options.drops?.delete(start);
        return fakeBody(object.subarray(start, end + 1), random, drop);
      },
    },
  };
}

/** `object` (over 1 MiB) as 1 MiB ranges, 3 in flight, every range after the first one byte too long. */
export function oversizedRanges(object: Buffer): RangedSource & BodyResumePolicy {
  const MiB = 1024 * KiB;
  return {
    first: Readable.from([object.subarray(0, MiB)]),
    firstLength: MiB,
    totalBytes: object.length,
    rangeSize: MiB,
    concurrency: 3,
    maxResumes: 5,
    toError: (err) => new RunctlError("STORAGE_ERROR", (err as Error).message),
    fetch: async (start, end) => Readable.from([object.subarray(start, end + 2)]),
  };
}
