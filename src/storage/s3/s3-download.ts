import type { FileHandle } from "node:fs/promises";
import { Readable } from "node:stream";
import { GetObjectCommand, type GetObjectCommandOutput, type S3Client } from "@aws-sdk/client-s3";
import { RunctlError } from "../../errors/runctl-error.js";
import { writeStreamToFile } from "../download-to-file.js";
import { toStorageError, type BodyResumePolicy, type S3ErrorContext } from "./s3-errors.js";
import { ResumingObjectStream } from "./s3-object-stream.js";
import { writeRangesToFile } from "./s3-ranged-file.js";
import { RangedObjectStream, type RangedSource } from "./s3-ranged-stream.js";
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

/** The object as the first ranged GET found it: one whole body (resumed if it drops), or ranges. */
type OpenedObject =
  | { readonly kind: "whole"; readonly stream: Readable }
  | { readonly kind: "ranged"; readonly source: RangedSource; readonly policy: BodyResumePolicy };

/**
 * Sends the first request, a ranged GET of the first `rangeSize` bytes, whose Content-Range gives
 * the object's size (no HEAD): an object that fits is that one body; a larger one continues as
 * ranged GETs pinned to its ETag.
 */
async function openObject(ctx: S3DownloadContext, key: string, signal: AbortSignal | undefined): Promise<OpenedObject> {
  const { client, bucket, rangeSize, retry, context } = ctx;
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
  const policy: BodyResumePolicy = {
    maxResumes: retry.retries,
    signal,
    onAbort: () => new RunctlError("ABORTED", `Aborted: S3 get of ${where}.`, { cause: signal?.reason }),
    toError: (err: unknown): RunctlError => toStorageError(err, context("get", key), signal),
  };
  /** A whole body, resumed from where it dropped with a ranged GET pinned to its ETag. */
  const whole = (out: GetObjectCommandOutput, totalBytes: number | undefined): OpenedObject => {
    const etag = out.ETag;
    const stream = new ResumingObjectStream({
      ...policy,
      first: bodyOf(out),
      totalBytes,
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
    return { kind: "whole", stream };
  };

  let first: GetObjectCommandOutput;
  try {
    first = await getObject(`bytes=0-${rangeSize - 1}`, undefined);
  } catch (err) {
    // An empty object has no byte 0: S3 answers a ranged GET with 416 InvalidRange.
    if (!(err instanceof RunctlError && err.details["awsCode"] === "InvalidRange")) throw err;
    const out = await getObject(undefined, undefined);
    return whole(out, out.ContentLength);
  }
  const body = bodyOf(first);
  const range = parseContentRange(first.ContentRange);
  const etag = first.ETag;
  // The whole object came (it fits in one range, or the server ignored the Range header).
  if (!range) return whole(first, first.ContentLength);
  if (range.start !== 0) {
    body.destroy();
    throw new RunctlError("STORAGE_ERROR", `S3 get of ${where}: the server answered bytes 0-${rangeSize - 1} with Content-Range ${first.ContentRange ?? "missing"}.`, {
      details: { operation: "get", bucket, key },
    });
  }
  if (range.total > 0 && range.end + 1 >= range.total) return whole(first, range.total);
  // Without an ETag, ranges cannot be pinned to one version of the object: read it as one body.
  // An empty object also goes this way: some servers (s3rver) answer its range with `bytes 0-0/0`.
  if (!etag || range.total === 0) {
    body.destroy();
    const out = await getObject(undefined, undefined);
    return whole(out, out.ContentLength);
  }
  const total = range.total;
  const fetch = async (start: number, end: number): Promise<Readable> => {
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
  };
  const source: RangedSource = { first: body, firstLength: range.end + 1, totalBytes: total, rangeSize, concurrency: ctx.concurrency, fetch };
  return { kind: "ranged", source, policy };
}

/**
 * Opens `key` for reading without buffering it. An object that fits in one range is that one body,
 * resumed with a ranged GET pinned to its ETag if the connection drops ({@link ResumingObjectStream});
 * a larger one continues as parallel ranged GETs pinned to the same ETag, emitted in order with
 * bounded memory ({@link RangedObjectStream}). An object changed mid-download fails the stream with
 * STORAGE_ERROR; NOT_FOUND, ABORTED and retries as for every call.
 *
 * @example
 * ```ts
 * await pipeline(await downloadStream(ctx, "runs/r1/ckpt.pt", signal), createWriteStream("ckpt.pt"));
 * ```
 */
export async function downloadStream(ctx: S3DownloadContext, key: string, signal: AbortSignal | undefined): Promise<Readable> {
  const opened = await openObject(ctx, key, signal);
  return opened.kind === "whole" ? opened.stream : new RangedObjectStream({ ...opened.policy, ...opened.source });
}

/**
 * Writes `key` into the open `file` from offset 0: a larger object as parallel ranged GETs whose
 * bytes go straight to their offsets ({@link writeRangesToFile}: nothing held for ordering), a
 * smaller one as one resumed body. Resolves with the object's size once every byte is written;
 * on failure every request has stopped and every write settled. The caller owns the file.
 */
export async function downloadToHandle(ctx: S3DownloadContext, key: string, file: FileHandle, signal: AbortSignal | undefined): Promise<number> {
  const opened = await openObject(ctx, key, signal);
  return opened.kind === "whole" ? writeStreamToFile(opened.stream, file) : writeRangesToFile({ ...opened.policy, ...opened.source, file });
}
