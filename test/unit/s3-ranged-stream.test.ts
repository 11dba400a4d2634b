import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { RangedObjectStream } from "../../src/storage/s3/s3-ranged-stream.js";
import { fakeRanges, oversizedRanges, rng } from "../support/fake-bodies.js";

const KiB = 1024;
const MiB = 1024 * KiB;

function stream(object: Buffer, options: { rangeSize: number; concurrency: number; seed: number; drops?: Map<number, number> }): { stream: RangedObjectStream; fetched: string[] } {
  const { source, fetched } = fakeRanges(object, options);
  return { fetched, stream: new RangedObjectStream(source) };
}

/** Reads the stream, pausing now and then like a slow disk, so ranges pile up behind the one being emitted. */
async function readSlowly(s: Readable, seed: number): Promise<Buffer> {
  const random = rng(seed);
  const parts: Buffer[] = [];
  for await (const chunk of s) {
    parts.push(chunk as Buffer);
    if (random() < 0.02) await sleep(5);
  }
  return Buffer.concat(parts);
}

const sha = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

describe("RangedObjectStream", () => {
  it("emits the object byte for byte when ranges finish out of order and the reader is slow", async () => {
    const object = randomBytes(9 * MiB + 12345);
    for (const [seed, rangeSize, concurrency] of [[1, 1 * MiB, 4], [2, 512 * KiB, 8], [3, 5 * MiB, 2], [4, 1 * MiB, 1]] as const) {
      const { stream: s, fetched } = stream(object, { rangeSize, concurrency, seed });
      expect(sha(await readSlowly(s, seed))).toBe(sha(object));
      expect(s.bytesRead).toBe(object.length);
      expect(fetched.length).toBe(Math.ceil(object.length / rangeSize) - 1);
    }
  });

  it("resumes ranges that drop mid-body from the byte where they stopped, the bytes identical", async () => {
    const object = randomBytes(6 * MiB + 777);
    // Ranges 1 MiB and 3 MiB drop part-way (one inside the first 64 KiB); the last one too.
    const drops = new Map([[1 * MiB, 300 * KiB], [3 * MiB, 17], [6 * MiB, 500]]);
    const { stream: s, fetched } = stream(object, { rangeSize: 1 * MiB, concurrency: 4, seed: 7, drops });
    expect(sha(await readSlowly(s, 7))).toBe(sha(object));
    expect(s.resumeCount).toBe(3);
    expect(fetched).toEqual(expect.arrayContaining([`${1 * MiB + 300 * KiB}-${2 * MiB - 1}`, `${3 * MiB + 17}-${4 * MiB - 1}`, `${6 * MiB + 500}-${object.length - 1}`]));
  });

  it("fails with the caller's error, not a short object, when a range sends more than it should", async () => {
    const object = randomBytes(3 * MiB);
    const s = new RangedObjectStream(oversizedRanges(object));
    await expect(readSlowly(s, 1)).rejects.toMatchObject({ code: "STORAGE_ERROR", message: expect.stringMatching(/sent more than the 1048576 bytes/) });
  });
});
