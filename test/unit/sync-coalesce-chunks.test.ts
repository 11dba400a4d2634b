import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { coalesceChunks } from "../../src/sync/coalesce-chunks.js";

/** The writes as they leave the stream ('data' events: async iteration would join buffered ones). */
async function through(chunks: readonly Buffer[]): Promise<Buffer[]> {
  const out: Buffer[] = [];
  const stream = Readable.from(chunks).pipe(coalesceChunks());
  stream.on("data", (chunk: Buffer) => out.push(chunk));
  await new Promise((resolve) => stream.on("end", resolve));
  return out;
}

describe("coalesceChunks", () => {
  it("joins small chunks into writes of about 64 KiB, passes large ones through, and keeps every byte in order", async () => {
    const chunks = [...Array.from({ length: 300 }, () => randomBytes(512)), randomBytes(200 * 1024), randomBytes(10)];
    const out = await through(chunks);
    expect(Buffer.concat(out).equals(Buffer.concat(chunks))).toBe(true);
    // 300 headers of 512 bytes: 150 KiB in 3 writes (64 KiB, 64 KiB, the rest), then the big chunk, then the tail.
    expect(out.map((c) => c.length)).toEqual([64 * 1024, 64 * 1024, 22 * 1024, 200 * 1024, 10]);
  });

  it("sends a partial batch without waiting for more input", async () => {
    const stream = coalesceChunks();
    const first = new Promise<Buffer>((resolve) => stream.once("data", resolve));
    stream.write(Buffer.from("header"));
    expect((await first).toString()).toBe("header"); // the stream is still open
    stream.end();
  });
});
