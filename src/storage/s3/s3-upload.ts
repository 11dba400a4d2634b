import { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
} from "@aws-sdk/client-s3";
import { RunctlError } from "../../errors/runctl-error.js";
import { toStorageError, type S3ErrorContext } from "./s3-errors.js";
import { withS3Retry, type ResolvedS3RetryOptions } from "./s3-retry.js";
import { unsignedPayloadOverTls } from "./s3-unsigned-payload.js";

/** S3 accepts at most this many parts in one multipart upload. */
const MAX_PARTS = 10_000;

/**
 * What a multipart upload needs from its {@link s3} storage.
 *
 * @example
 * ```ts
 * await uploadStream({ client, bucket, partSize, queueSize, retry, context }, "runs/r1/ckpt.pt", stream, signal);
 * ```
 */
export interface S3UploadContext {
  readonly client: S3Client;
  readonly bucket: string;
  readonly partSize: number;
  readonly queueSize: number;
  readonly retry: ResolvedS3RetryOptions;
  readonly context: (operation: string, key?: string) => S3ErrorContext;
}

/**
 * Streams `body` to `key`: a body of at most one part goes up with one PutObject, a larger one as
 * a multipart upload with up to `queueSize` parts in flight. A stream is copied into a fixed pool
 * of `queueSize + 1` part buffers (about `partSize × (queueSize + 1)` bytes, whatever the object's
 * size; no per-part allocation or `Buffer.concat`), and reading stops while every buffer is busy.
 * Every request is retried on its own (the part's bytes stay in memory); the first failure for
 * good stops the other parts, is the error the caller sees, and the upload is aborted (best
 * effort). An abort of `signal` does the same with ABORTED. The body stream is destroyed on failure.
 *
 * @example
 * ```ts
 * await uploadStream(ctx, "runs/r1/ckpt.pt", createReadStream("ckpt.pt"), signal);
 * ```
 */
export async function uploadStream(ctx: S3UploadContext, key: string, body: Readable | Uint8Array, signal: AbortSignal | undefined): Promise<void> {
  const { client, bucket, partSize, queueSize, retry, context } = ctx;
  const controller = new AbortController();
  // The first request that fails for good; the other parts are stopped at once.
  let failure: unknown;
  const fail = (err: unknown): void => {
    if (failure !== undefined || controller.signal.aborted) return;
    failure = err;
    controller.abort();
  };
  const onAbort = (): void => controller.abort(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  // A stream stalled in a read must end too: destroying it wakes the read loop below.
  const stopBody = (): void => {
    if (body instanceof Readable && !body.readableEnded) body.destroy();
  };
  controller.signal.addEventListener("abort", stopBody, { once: true });
  if (signal?.aborted) onAbort();

  const call = <T>(attempt: () => Promise<T>): Promise<T> => withS3Retry(attempt, retry, context("put", key), controller.signal);
  const opts = { abortSignal: controller.signal };

  let uploadId: Promise<string> | undefined;
  const startMultipart = async (): Promise<string> => {
    // With request checksums on (the default), each part carries a CRC32 that Complete repeats.
    const mode = await client.config.requestChecksumCalculation?.();
    // Not cut short by an abort: once it is sent, its UploadId is what AbortMultipartUpload needs,
    // and an upload whose creation was abandoned mid-request would be left pending.
    const out = await withS3Retry(
      () => client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ...(mode === "WHEN_SUPPORTED" ? { ChecksumAlgorithm: "CRC32" as const } : {}) })),
      retry,
      context("put", key),
      undefined,
    );
    if (!out.UploadId) throw new RunctlError("STORAGE_ERROR", `S3 put of s3://${bucket}/${key}: CreateMultipartUpload returned no UploadId.`);
    return out.UploadId;
  };

  const parts: CompletedPart[] = [];
  const inflight = new Set<Promise<void>>();
  let partCount = 0;
  /** Sends one part once fewer than `queueSize` are in flight; `done` runs when its request settled for good. */
  const sendPart = async (bytes: Uint8Array, done: () => void): Promise<void> => {
    while (inflight.size >= queueSize && !controller.signal.aborted) await Promise.race(inflight);
    if (controller.signal.aborted) return;
    const partNumber = ++partCount;
    if (partNumber > MAX_PARTS) {
      throw new RunctlError("INVALID_ARGUMENT", `S3 put of s3://${bucket}/${key}: the body needs more than ${MAX_PARTS} parts of ${partSize} bytes; raise s3() partSizeBytes.`);
    }
    uploadId ??= startMultipart();
    const id = uploadId;
    const sending = (async () => {
      const upload = await id;
      const out = await call(() =>
        client.send(unsignedPayloadOverTls(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: upload, PartNumber: partNumber, Body: bytes, ContentLength: bytes.byteLength })), opts),
      );
      parts[partNumber - 1] = { PartNumber: partNumber, ETag: out.ETag, ...(out.ChecksumCRC32 ? { ChecksumCRC32: out.ChecksumCRC32 } : {}) };
    })().then(done, fail);
    inflight.add(sending);
    void sending.finally(() => inflight.delete(sending));
  };

  try {
    let last: Uint8Array;
    if (body instanceof Readable) {
      last = await readParts(body, partSize, queueSize + 1, sendPart, () => controller.signal.aborted);
    } else {
      // Bytes already in memory: parts are views of them, nothing is copied.
      let offset = 0;
      for (; body.byteLength - offset > partSize && !controller.signal.aborted; offset += partSize) {
        await sendPart(body.subarray(offset, offset + partSize), () => undefined);
      }
      last = body.subarray(offset);
    }
    if (!controller.signal.aborted && uploadId === undefined) {
      await call(() => client.send(unsignedPayloadOverTls(new PutObjectCommand({ Bucket: bucket, Key: key, Body: last, ContentLength: last.byteLength })), opts));
      return;
    }
    await sendPart(last, () => undefined);
    await Promise.all(inflight);
    if (controller.signal.aborted || uploadId === undefined) throw failure ?? new Error("aborted");
    const upload = await uploadId;
    await call(() => client.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: upload, MultipartUpload: { Parts: parts } }), opts));
  } catch (err) {
    fail(err);
    stopBody();
    await Promise.allSettled(inflight);
    // Cleanup before the caller hears of the failure: no multipart upload is left pending after put rejects.
    if (uploadId) await abortMultipart(ctx, key, uploadId);
    throw failure !== undefined ? toStorageError(failure, context("put", key)) : toStorageError(err, context("put", key), controller.signal);
  } finally {
    signal?.removeEventListener("abort", onAbort);
    controller.signal.removeEventListener("abort", stopBody);
  }
}

/**
 * Copies `body` into at most `pool` buffers of `partSize` bytes, handing each full one to `send`
 * (which gives it back once its request has settled) when more bytes follow; returns the last
 * (possibly partial, possibly the only) part. A buffer is reused only after its request settled:
 * the SDK keeps a reference to the body while it sends, and retries send the same bytes.
 */
async function readParts(
  body: Readable,
  partSize: number,
  pool: number,
  send: (bytes: Uint8Array, done: () => void) => Promise<void>,
  stopped: () => boolean,
): Promise<Uint8Array> {
  const free: Buffer[] = [];
  let allocated = 0;
  let waiting: (() => void) | undefined;
  const give = (buf: Buffer): void => {
    free.push(buf);
    waiting?.();
  };
  const take = async (): Promise<Buffer> => {
    for (;;) {
      const buf = free.pop();
      if (buf) return buf;
      if (allocated < pool) {
        allocated++;
        // Outside Node's small-buffer pool, and left uninitialized: every byte sent is copied in first.
        return Buffer.allocUnsafeSlow(partSize);
      }
      await new Promise<void>((resolve) => (waiting = resolve));
      waiting = undefined;
    }
  };
  let buf = await take();
  let filled = 0;
  for await (const raw of body) {
    const chunk: Uint8Array = typeof raw === "string" ? Buffer.from(raw, "utf8") : (raw as Uint8Array);
    if (!(chunk instanceof Uint8Array)) throw new RunctlError("INVALID_ARGUMENT", "S3 put: the body stream must yield bytes or strings.");
    let offset = 0;
    while (offset < chunk.byteLength) {
      // A full part goes only once more bytes follow: a body of exactly one part is one PutObject.
      if (filled === partSize) {
        const full = buf;
        await send(full, () => give(full));
        if (stopped()) return full.subarray(0, 0);
        buf = await take();
        filled = 0;
      }
      const n = Math.min(partSize - filled, chunk.byteLength - offset);
      buf.set(n === chunk.byteLength ? chunk : chunk.subarray(offset, offset + n), filled);
      filled += n;
      offset += n;
    }
    if (stopped()) break;
  }
  return buf.subarray(0, filled);
}

/** AbortMultipartUpload, best effort: briefly retried, never throws (the caller reports the original error). */
async function abortMultipart(ctx: S3UploadContext, key: string, uploadId: Promise<string>): Promise<void> {
  const { client, bucket, retry, context } = ctx;
  try {
    const id = await uploadId;
    await withS3Retry(
      () => client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: id })),
      { ...retry, maxElapsedMs: Math.min(retry.maxElapsedMs, 5_000) },
      context("abort multipart upload of", key),
      undefined,
      { unref: true },
    );
  } catch {
    // Best effort: S3 lifecycle rules clean up what remains.
  }
}
