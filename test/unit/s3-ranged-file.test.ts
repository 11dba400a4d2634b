import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { RunctlError } from "../../src/errors/runctl-error.js";
import { LocalWriteError } from "../../src/storage/download-to-file.js";
import { writeRangesToFile } from "../../src/storage/s3/s3-ranged-file.js";
import { fakeBody, fakeRanges, oversizedRanges, rng } from "../support/fake-bodies.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const dir = mkdtempSync(join(tmpdir(), "runctl-ranged-file-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sha = (b: Buffer): string => createHash("sha256").update(b).digest("hex");
const toError = (err: unknown): RunctlError => new RunctlError("STORAGE_ERROR", `get failed: ${(err as Error).message}`, { cause: err });

/** Downloads `object` into a new file through fake ranged GETs; returns the file's bytes and what was fetched. */
async function download(
  object: Buffer,
  options: { rangeSize: number; concurrency: number; seed: number; drops?: Map<number, number>; signal?: AbortSignal; onFetch?: (start: number) => void },
): Promise<{ bytes: Buffer; written: number; fetched: string[] }> {
  const { source, fetched } = fakeRanges(object, options);
  const path = join(dir, `f-${options.seed}-${randomBytes(3).toString("hex")}`);
  const file = await open(path, "wx");
  try {
    const written = await writeRangesToFile({ ...source, signal: options.signal, onAbort: () => new RunctlError("ABORTED", "aborted"), file });
    return { bytes: readFileSync(path), written, fetched };
  } finally {
    // Only possible without EBADF when every write has settled, which writeRangesToFile promises.
    await file.close();
  }
}

describe("writeRangesToFile", () => {
  it("writes the object byte for byte when ranges finish out of order", async () => {
    const object = randomBytes(9 * MiB + 12345);
    for (const [seed, rangeSize, concurrency] of [[1, 1 * MiB, 4], [2, 512 * KiB, 8], [3, 5 * MiB, 2], [4, 1 * MiB, 1]] as const) {
      const { bytes, written, fetched } = await download(object, { rangeSize, concurrency, seed });
      expect(sha(bytes)).toBe(sha(object));
      expect(written).toBe(object.length);
      expect(fetched.length).toBe(Math.ceil(object.length / rangeSize) - 1);
    }
  });

  it("resumes ranges that drop mid-body from the byte where they stopped, the bytes identical", async () => {
    const object = randomBytes(6 * MiB + 777);
    // The ranges at 1 MiB and 3 MiB (one inside its first chunk) and the last one drop part-way.
    const drops = new Map([[1 * MiB, 300 * KiB], [3 * MiB, 17], [6 * MiB, 500]]);
    const { bytes, written, fetched } = await download(object, { rangeSize: 1 * MiB, concurrency: 4, seed: 7, drops });
    expect(sha(bytes)).toBe(sha(object));
    expect(written).toBe(object.length);
    expect(fetched).toEqual(expect.arrayContaining([`${1 * MiB + 300 * KiB}-${2 * MiB - 1}`, `${3 * MiB + 17}-${4 * MiB - 1}`, `${6 * MiB + 500}-${object.length - 1}`]));
    expect(fetched.length).toBe(6 + 3);
  });

  it("fails with the caller's error when a range sends more than it should, every write settled", async () => {
    const object = randomBytes(3 * MiB);
    const file = await open(join(dir, "oversize"), "wx");
    const run = writeRangesToFile({ ...oversizedRanges(object), file });
    await expect(run).rejects.toMatchObject({ code: "STORAGE_ERROR", message: expect.stringMatching(/sent more than the 1048576 bytes/) });
    await file.close();
  });

  it("a write the file system refuses (/dev/full: ENOSPC) rejects with a LocalWriteError, not the caller's server error", async () => {
    const object = randomBytes(3 * MiB);
    const { source } = fakeRanges(object, { rangeSize: 1 * MiB, concurrency: 2, seed: 11 });
    const file = await open("/dev/full", "w");
    const mapped: unknown[] = [];
    const err: unknown = await writeRangesToFile({ ...source, toError: (e) => (mapped.push(e), toError(e)), file }).then(
      () => "resolved",
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(LocalWriteError);
    expect((err as LocalWriteError).cause).toMatchObject({ code: "ENOSPC" });
    expect(mapped).toEqual([]);
    await file.close();
  });

  it("gives up after maxResumes drops with the body's error", async () => {
    const object = randomBytes(2 * MiB);
    const file = await open(join(dir, "drops"), "wx");
    const random = rng(3);
    const run = writeRangesToFile({
      first: fakeBody(object.subarray(0, MiB), random),
      firstLength: MiB,
      totalBytes: object.length,
      rangeSize: MiB,
      concurrency: 2,
      maxResumes: 2,
      toError,
      file,
      fetch: async (start, end) => fakeBody(object.subarray(start, end + 1), random, 10),
    });
    await expect(run).rejects.toMatchObject({ code: "STORAGE_ERROR", message: expect.stringMatching(/socket hang up/) });
    await file.close();
  });

  it("an abort mid-download rejects with the caller's ABORTED and stops fetching", async () => {
    const object = randomBytes(8 * MiB);
    const controller = new AbortController();
    const starts: number[] = [];
    const run = download(object, {
      rangeSize: 512 * KiB,
      concurrency: 2,
      seed: 11,
      signal: controller.signal,
      onFetch: (start) => {
        starts.push(start);
        if (start >= 3 * MiB) controller.abort();
      },
    });
    await expect(run).rejects.toMatchObject({ code: "ABORTED" });
    const fetchedByThen = starts.length;
    await sleep(50);
    expect(starts.length).toBe(fetchedByThen);
    expect(Math.max(...starts)).toBeLessThan(5 * MiB);
  });
});
