/** Keeps the last `limitBytes` of a byte stream, for bounded output tails in errors. */
export class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly limitBytes: number) {}

  push(data: Uint8Array): void {
    if (this.limitBytes <= 0) return;
    const buf = Buffer.from(data);
    this.chunks.push(buf);
    this.size += buf.length;
    while (this.size > this.limitBytes && this.chunks.length > 1) {
      this.size -= this.chunks.shift()!.length;
    }
  }

  toString(): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - this.limitBytes)).toString("utf8");
  }
}
