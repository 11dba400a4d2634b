import { Readable } from "node:stream";
import { GetObjectCommand, type GetObjectCommandOutput, type S3Client } from "@aws-sdk/client-s3";
import { RunctlError } from "../../errors/runctl-error.js";
import { toStorageError, type S3ErrorContext } from "./s3-errors.js";
import { ResumingObjectStream } from "./s3-object-stream.js";
import { RangedObjectStream } from "./s3-ranged-stream.js";
import { withS3Retry, type ResolvedS3RetryOptions } from "./s3-retry.js";

/**
 * What a download needs from its {@link s3} storage.
 *
 * @example
 * ```ts
 * const body = await downloadStream({ client, bucket, rangeSize: 8 << 20, concurrency: 4, retry, context }, "runs/r1/ckpt.pt", signal);
 * ```
 */
export interface S3DownloadContext {
  readonly client: S3Client;
  readonly bucket: string;
  /** Bytes per ranged GET; an object up to this size is one GET. */
  readonly rangeSize: number;
  /** Ranged GETs in flight at once for a larger object. */
  readonly concurrency: number;
  readonly retry: ResolvedS3RetryOptions;
  readonly context: (operation: string, key?: string) => S3ErrorContext;
}

/** `bytes START-END/TOTAL` of a Content-Range header. */
function parseContentRange(header: string | undefined): { start: number; end: number; total: number } | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(header ?? "");
  return m ? { start: Number(m[1]), end: Number(m[2]), total: Number(m[3]) } : undefined;
}

/**
 * Opens `key` for reading without buffering it. The first request is a ranged GET of the first
 * `rangeSize` bytes, whose Content-Range gives the object's size (no HEAD): an object that fits
 * is that one body, resumed with a ranged GET pinned to its ETag if the connection drops
 * ({@link ResumingObjectStream}); a larger one continues as parallel ranged GETs pinned to the same
 * ETag, emitted in order with bounded memory ({@link RangedObjectStream}). An object changed
 * mid-download fails the stream with STORAGE_ERROR; NOT_FOUND, ABORTED and retries as for every call.
 *
 * @example
 * ```ts
 * await pipeline(await downloadStream(ctx, "runs/r1/ckpt.pt", signal), createWriteStream("ckpt.pt"));
 * ```
 */
export async function downloadStream(ctx: S3DownloadContext, key: string, signal: AbortSignal | undefined): Promise<Readable> {
  const { client, bucket, rangeSize, concurrency, retry, context } = ctx;
  const where = `s3://${bucket}/${key}`;
  const getObject = (range: string | undefined, etag: string | undefined): Promise<GetObjectCommandOutput> =>
    withS3Retry(
      () =>
        client.send(
          new GetObjectCommand({ Bucket: bucket, Key: key, ...(range ? { Range: range } : {}), ...(etag ? { IfMatch: etag } : {}) }),
          signal ? { abortSignal: signal } : {},
        ),
      retry,
      context("get", key),
      signal,
    );
  const bodyOf = (out: GetObjectCommandOutput): Readable => {
    if (out.Body instanceof Readable) return out.Body;
    throw new RunctlError("STORAGE_ERROR", `S3 get of ${where} returned no readable body.`);
  };
  const onAbort = (): RunctlError => new RunctlError("ABORTED", `Aborted: S3 get of ${where}.`, { cause: signal?.reason });
  const toError = (err: unknown): RunctlError => toStorageError(err, context("get", key), signal);
  /** A whole body, resumed from where it dropped with a ranged GET pinned to `etag`. */
  const resuming = (first: Readable, totalBytes: number | undefined, etag: string | undefined): Readable =>
    new ResumingObjectStream({
      first,
      totalBytes,
      maxResumes: retry.retries,
      signal,
      onAbort,
      toError,
      reopen: async (offset) => {
        const next = await getObject(`bytes=${offset}-`, etag);
        const range = next.ContentRange;
        if (!(next.Body instanceof Readable) || (range !== undefined && !range.startsWith(`bytes ${offset}-`)) || (range === undefined && offset > 0)) {
          (next.Body as Readable | undefined)?.destroy?.();
          throw new RunctlError("STORAGE_ERROR", `S3 get of ${where}: the server did not resume the body at byte ${offset} (Content-Range ${range ?? "missing"}).`, {
            details: { operation: "get", bucket, key },
          });
        }
        return next.Body;
      },
    });

  let first: GetObjectCommandOutput;
  try {
    first = await getObject(`bytes=0-${rangeSize - 1}`, undefined);
  } catch (err) {
    // An empty object has no byte 0: S3 answers a ranged GET with 416 InvalidRange.
    if (!(err instanceof RunctlError && err.details["awsCode"] === "InvalidRange")) throw err;
    first = await getObject(undefined, undefined);
    return resuming(bodyOf(first), first.ContentLength, first.ETag);
  }
  const body = bodyOf(first);
  const range = parseContentRange(first.ContentRange);
  const etag = first.ETag;
  // The whole object came (it fits in one range, or the server ignored the Range header).
  if (!range) return resuming(body, first.ContentLength, etag);
  if (range.start !== 0) {
    body.destroy();
    throw new RunctlError("STORAGE_ERROR", `S3 get of ${where}: the server answered bytes 0-${rangeSize - 1} with Content-Range ${first.ContentRange ?? "missing"}.`, {
      details: { operation: "get", bucket, key },
    });
  }
  if (range.total > 0 && range.end + 1 >= range.total) return resuming(body, range.total, etag);
  // Without an ETag, ranges cannot be pinned to one version of the object: read it as one body.
  // An empty object also goes this way: some servers (s3rver) answer its range with `bytes 0-0/0`.
  if (!etag || range.total === 0) {
    body.destroy();
    const whole = await getObject(undefined, undefined);
    return resuming(bodyOf(whole), whole.ContentLength, whole.ETag);
  }
  const total = range.total;
  return new RangedObjectStream({
    first: body,
    firstLength: range.end + 1,
    totalBytes: total,
    rangeSize,
    concurrency,
    maxResumes: retry.retries,
    signal,
    onAbort,
    toError,
    fetch: async (start, end) => {
      const out = await getObject(`bytes=${start}-${end}`, etag);
      const got = parseContentRange(out.ContentRange);
      // Servers that ignore If-Match (s3rver) still say which version they sent.
      if ((out.ETag !== undefined && out.ETag !== etag) || (got !== undefined && got.total !== total)) {
        (out.Body as Readable | undefined)?.destroy?.();
        throw new RunctlError("STORAGE_ERROR", `S3 get of ${where} failed: the object changed while it was being read (ETag ${etag} became ${out.ETag ?? "unknown"}, ${got?.total ?? "?"} bytes).`, {
          details: { operation: "get", bucket, key, awsCode: "PreconditionFailed" },
        });
      }
      if (got === undefined || got.start !== start || got.end !== end) {
        (out.Body as Readable | undefined)?.destroy?.();
        throw new RunctlError("STORAGE_ERROR", `S3 get of ${where}: the server answered bytes ${start}-${end} with Content-Range ${out.ContentRange ?? "missing"}.`, {
          details: { operation: "get", bucket, key },
        });
      }
      return bodyOf(out);
    },
  });
}
