import { Readable } from "node:stream";
import { AbortMultipartUploadCommand, S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { toStorageError, type S3ErrorContext } from "./s3-errors.js";
import { withS3Retry, type ResolvedS3RetryOptions } from "./s3-retry.js";

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
 * Streams `body` to `key` as a multipart upload (lib-storage), holding about
 * `partSize × (queueSize + 1)` bytes in memory; every request is retried on its own, the first
 * failure for good stops the other parts, and a failed upload is aborted (best effort).
 *
 * @example
 * ```ts
 * await uploadStream(ctx, "runs/r1/ckpt.pt", createReadStream("ckpt.pt"), signal);
 * ```
 */
export async function uploadStream(ctx: S3UploadContext, key: string, body: Readable | Uint8Array, signal: AbortSignal | undefined): Promise<void> {
  const { client, bucket, partSize, queueSize, retry, context } = ctx;
  const call = <T>(operation: string, k: string | undefined, s: AbortSignal | undefined, attempt: () => Promise<T>): Promise<T> =>
    withS3Retry(attempt, retry, context(operation, k), s);
  const controller = new AbortController();
  const onAbort = (): void => controller.abort(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  // lib-storage sends every request through this client: each one (create, each part, complete)
  // is retried on its own, with the part's bytes still in memory. Cleanup runs even after an abort.
  const retrying = Object.create(client) as S3Client;
  // The first request that fails for good stops the other parts (lib-storage would go on reading
  // and sending the rest of the stream) and is the error the caller sees.
  let failure: unknown;
  // Cleanup of a failed upload (AbortMultipartUpload) is best effort, briefly retried, and never
  // replaces the error that caused it.
  const send = (command: Parameters<S3Client["send"]>[0]): Promise<unknown> =>
    command instanceof AbortMultipartUploadCommand
      ? withS3Retry(() => client.send(command), { ...retry, maxElapsedMs: Math.min(retry.maxElapsedMs, 5_000) }, context("abort multipart upload of", key), undefined, { unref: true }).catch(() => undefined)
      : call("put", key, controller.signal, () => client.send(command, { abortSignal: controller.signal })).catch((err: unknown) => {
          if (!controller.signal.aborted) {
            failure = err;
            controller.abort();
          }
          throw err;
        });
  (retrying as unknown as { send: typeof send }).send = send;
  const upload = new Upload({
    client: retrying,
    params: { Bucket: bucket, Key: key, Body: body },
    partSize,
    queueSize,
    abortController: controller,
  });
  try {
    await upload.done();
  } catch (err) {
    if (body instanceof Readable && !body.readableEnded) body.destroy();
    throw failure !== undefined ? toStorageError(failure, context("put", key)) : toStorageError(err, context("put", key), controller.signal);
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}
