/**
 * Keeps the last `limitBytes` bytes of a byte stream, for bounded output tails (exec results,
 * errors). The one tail buffer of the local, SSH and SSM transports.
 *
 * @example
 * ```ts
 * const t = new TailBuffer(4); t.push(Buffer.from("abcdef")); t.toString(); // "cdef"
 * ```
 */
export class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  /** @param limitBytes - Bytes kept (0 keeps nothing). */
  constructor(private readonly limitBytes: number) {}

  /** Appends bytes, dropping the oldest beyond the limit. */
  push(data: Uint8Array): void {
    if (this.limitBytes <= 0) return;
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data);
    this.chunks.push(buf);
    this.size += buf.length;
    while (this.chunks.length > 1 && this.size - this.chunks[0]!.length >= this.limitBytes) {
      this.size -= this.chunks.shift()!.length;
    }
  }

  /** The kept bytes as UTF-8, starting at a character boundary. */
  toString(): string {
    let buf = Buffer.concat(this.chunks);
    if (buf.length > this.limitBytes) buf = buf.subarray(buf.length - this.limitBytes);
    let start = 0;
    while (start < 3 && start < buf.length && (buf[start]! & 0xc0) === 0x80) start++;
    return buf.subarray(start).toString("utf8");
  }
}
