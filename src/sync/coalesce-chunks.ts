import { Transform, type TransformCallback } from "node:stream";

/** Chunks at least this large pass through as they are; smaller ones are joined up to it. @defaultValue 64 KiB */
const COALESCE_BYTES = 64 * 1024;

/**
 * A stream that joins small chunks (a tar's 512-byte headers and small files) into writes of about
 * 64 KiB. Over SSH each write becomes its own encrypted packet and, with TCP_NODELAY, its own TCP
 * segment and wake-up of the agent: thousands of tiny writes cost more CPU than the bytes themselves.
 * A partial batch is sent once the current round of the event loop is over, so nothing waits long.
 *
 * @defaultValue batches of 64 KiB
 * @example
 * ```ts
 * tar.stream.pipe(coalesceChunks()).pipe(channel);
 * ```
 */
export function coalesceChunks(): Transform {
  let parts: Buffer[] = [];
  let size = 0;
  let timer: NodeJS.Immediate | undefined;
  const flush = (stream: Transform): void => {
    if (timer !== undefined) {
      clearImmediate(timer);
      timer = undefined;
    }
    if (size === 0) return;
    stream.push(parts.length === 1 ? parts[0] : Buffer.concat(parts, size));
    parts = [];
    size = 0;
  };
  return new Transform({
    transform(this: Transform, chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
      if (chunk.length >= COALESCE_BYTES) {
        flush(this);
        this.push(chunk);
      } else {
        parts.push(chunk);
        size += chunk.length;
        if (size >= COALESCE_BYTES) flush(this);
        else timer ??= setImmediate(() => flush(this));
      }
      callback();
    },
    flush(this: Transform, callback: TransformCallback): void {
      flush(this);
      callback();
    },
    destroy(error, callback): void {
      if (timer !== undefined) clearImmediate(timer);
      callback(error);
    },
  });
}
