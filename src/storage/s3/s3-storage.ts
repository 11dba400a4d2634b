import { Readable } from "node:stream";
import {
  DeleteObjectsCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import { RunctlError, throwIfAborted } from "../../errors/runctl-error.js";
import { validateStorageKey } from "../storage-key.js";
import type { MachineSecrets, S3StorageDescriptor, Storage, StorageCallOptions, StorageObjectInfo } from "../types.js";
import { classifyS3Error, redact, toStorageError, type S3ErrorContext } from "./s3-errors.js";
import { resolveRetryOptions, withS3Retry, type S3RetryOptions } from "./s3-retry.js";
import { parseS3Uri } from "./s3-uri.js";
import {
  DELETE_BATCH,
  DELETE_CONCURRENCY,
  MAX_PART_SIZE,
  MIB,
  MIN_PART_SIZE,
  info,
  normalizeEndpoint,
  oneOf,
  positiveInteger,
  type AwsCredentialIdentity,
  type S3Storage,
  type S3StorageOptions,
} from "./s3-options.js";
import { writeFileAtomically } from "../download-to-file.js";
import { downloadStream, downloadToHandle, type S3DownloadContext } from "./s3-download.js";
import { unsignedPayloadOverTls } from "./s3-unsigned-payload.js";
import { uploadStream } from "./s3-upload.js";
import { resolveClientCredentials } from "./s3-credentials.js";

export type { S3Storage, S3StorageOptions } from "./s3-options.js";

/**
 * Storage in an S3 bucket (or any S3-protocol server), under an optional key prefix.
 *
 * - `put` streams: a `Readable` is copied into a fixed pool of `queueSize + 1` part buffers and goes
 *   up as a multipart upload with `queueSize` parts in flight (runctl's own uploader, see
 *   docs/decisions/0026), holding about `partSizeBytes × (queueSize + 1)` bytes whatever its size;
 *   bodies up to `partSizeBytes` go in one PutObject. S3 makes every write atomic: readers see the
 *   old or the whole new object.
 * - `get` returns the body as a Node `Readable` without buffering it. An object larger than
 *   `partSizeBytes` is fetched as parallel ranged GETs (`queueSize` ranges of `partSizeBytes` in
 *   flight, emitted in order), each pinned to the object's ETag: an object replaced mid-download
 *   fails with STORAGE_ERROR instead of mixing versions. A connection dropped mid-body is resumed
 *   with a ranged GET from the byte where it stopped.
 * - `download` writes an object to a local file: the same ranges, each written at its own offset
 *   as it arrives (nothing held for ordering), into a temporary file renamed into place when
 *   complete.
 * - `list` pages through ListObjectsV2 lazily and yields keys relative to the prefix.
 * - `delete` uses DeleteObjects, 1,000 keys a request.
 * - Every call takes an AbortSignal, retries throttling, 5xx and dropped connections within a
 *   bounded budget (`retry`), and fails with a {@link RunctlError}: `NOT_FOUND` (get of a missing
 *   object), `ABORTED`, or `STORAGE_ERROR` naming the bucket and key (`retryable` when repeating may
 *   help). Messages never contain credentials.
 *
 * Nothing is contacted until the first call; the URI and options are validated at once
 * (`INVALID_URI`, `INVALID_ARGUMENT`).
 *
 * @param uri - `s3://bucket` or `s3://bucket/prefix`.
 * @param options - Client, region, endpoint, credentials, checksums, multipart and retry settings.
 * @example
 * ```ts
 * const run = Runctl.instance(sshHosts(gpuBox))
 *   .checkpoints({ storage: s3("s3://ml-ckpt/team/runs", { region: "us-east-1" }), keep: 3 })
 *   .train("train.py");
 *
 * const store = s3("s3://ml-ckpt/datasets");
 * await store.put("mnist/train.bin", createReadStream("train.bin"));
 * for await (const o of store.list("mnist/")) console.log(o.key, o.size);
 * ```
 */
export function s3(uri: string, options: S3StorageOptions = {}): S3Storage {
  const location = parseS3Uri(uri);
  const { bucket, prefix } = location;
  const checksums = oneOf("checksums", options.checksums, ["when_supported", "when_required"] as const, "when_supported");
  const backend = oneOf("machineBackend", options.machineBackend, ["auto", "boto3", "cli"] as const, "auto");
  const partSize = positiveInteger("partSizeBytes", options.partSizeBytes ?? 8 * MIB, MIN_PART_SIZE, MAX_PART_SIZE);
  const queueSize = positiveInteger("queueSize", options.queueSize ?? 4, 1, 64);
  const retry = resolveRetryOptions(options.retry);
  const endpoint = options.endpoint === undefined ? undefined : normalizeEndpoint(options.endpoint);
  if (options.region !== undefined && !/^[a-z0-9-]{1,64}$/.test(options.region)) {
    throw new RunctlError("INVALID_ARGUMENT", `s3() region ${JSON.stringify(options.region)} is not a region name (e.g. us-east-1).`);
  }
  const forwardCredentials = options.forwardCredentials ?? true;

  // Secrets we know of, kept only to scrub them from messages.
  const secrets = new Set<string>();
  const remember = (c: Partial<AwsCredentialIdentity> | undefined): void => {
    if (c?.secretAccessKey) secrets.add(c.secretAccessKey);
    if (c?.sessionToken) secrets.add(c.sessionToken);
  };
  if (options.credentials && typeof options.credentials === "object") remember(options.credentials);

  const client =
    options.client ??
    new S3Client(
      ((): S3ClientConfig => {
        const mode = checksums === "when_required" ? "WHEN_REQUIRED" : "WHEN_SUPPORTED";
        const region = options.region ?? process.env["AWS_REGION"] ?? process.env["AWS_DEFAULT_REGION"] ?? (endpoint ? "us-east-1" : undefined);
        return {
          ...(region ? { region } : {}),
          ...(endpoint ? { endpoint } : {}),
          forcePathStyle: options.forcePathStyle ?? false,
          // A copy: the SDK annotates credential objects it is given.
          ...(options.credentials ? { credentials: typeof options.credentials === "function" ? options.credentials : { ...options.credentials } } : {}),
          requestChecksumCalculation: mode,
          responseChecksumValidation: mode,
          // runctl retries (p-retry, bounded); the SDK's own retries would multiply them.
          maxAttempts: 1,
          requestHandler: { connectionTimeout: 10_000 },
        };
      })(),
    );
  const forcePathStyle = options.forcePathStyle ?? (options.client ? options.client.config.forcePathStyle === true : false);

  const base = prefix === "" ? "" : `${prefix}/`;
  const fullKey = (key: string): string => `${base}${validateStorageKey(key)}`;
  const context = (operation: string, key?: string): S3ErrorContext => ({
    operation,
    bucket,
    key,
    endpoint: endpoint ?? null,
    secrets,
  });
  const call = <T>(operation: string, key: string | undefined, signal: AbortSignal | undefined, attempt: () => Promise<T>): Promise<T> =>
    withS3Retry(attempt, retry, context(operation, key), signal);

  const putStream = (key: string, body: Readable | Uint8Array, signal: AbortSignal | undefined): Promise<void> =>
    uploadStream({ client, bucket, partSize, queueSize, retry, context }, key, body, signal);
  // Ranges as large as upload parts, as many in flight as parts: the same memory bound.
  const downloads: S3DownloadContext = { client, bucket, rangeSize: partSize, concurrency: queueSize, retry, context };

  const deleteBatch = async (batch: readonly string[], signal: AbortSignal | undefined): Promise<{ key: string; code: string; message: string }[]> => {
    const out = await call("delete", batch.length === 1 ? batch[0] : `${base}… (${batch.length} keys)`, signal, () =>
      client.send(
        new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
        signal ? { abortSignal: signal } : {},
      ),
    );
    return (out.Errors ?? [])
      .filter((e) => e.Code !== "NoSuchKey")
      .map((e) => ({ key: (e.Key ?? "").slice(base.length), code: e.Code ?? "Unknown", message: redact(e.Message ?? "", secrets) }));
  };

  return {
    uri: location.uri,
    forwardCredentials: options.forwardCredentials,
    bucket,
    prefix,
    client,

    async put(key: string, body: string | Uint8Array | Readable, callOptions?: StorageCallOptions): Promise<void> {
      const signal = callOptions?.signal;
      const k = fullKey(key);
      if (typeof body === "string" || body instanceof Uint8Array) {
        const bytes = typeof body === "string" ? Buffer.from(body, "utf8") : body;
        if (bytes.byteLength > partSize) {
          throwIfAborted(signal);
          return putStream(k, bytes, signal);
        }
        throwIfAborted(signal);
        await call("put", k, signal, () =>
          client.send(
            unsignedPayloadOverTls(new PutObjectCommand({ Bucket: bucket, Key: k, Body: bytes, ContentLength: bytes.byteLength })),
            signal ? { abortSignal: signal } : {},
          ),
        );
        return;
      }
      if (!(body instanceof Readable)) {
        throw new RunctlError("INVALID_ARGUMENT", `S3 put of s3://${bucket}/${k}: the body must be a string, a Uint8Array or a Readable.`);
      }
      if (signal?.aborted) {
        body.destroy();
        throwIfAborted(signal);
      }
      return putStream(k, body, signal);
    },

    async get(key: string, callOptions?: StorageCallOptions): Promise<Readable> {
      const signal = callOptions?.signal;
      const k = fullKey(key);
      throwIfAborted(signal);
      return downloadStream(downloads, k, signal);
    },

    async download(key: string, path: string, callOptions?: StorageCallOptions): Promise<StorageObjectInfo> {
      const signal = callOptions?.signal;
      const k = fullKey(key);
      const size = await writeFileAtomically(path, signal, (file) => downloadToHandle(downloads, k, file, signal));
      return info(key, size, undefined, undefined);
    },

    async stat(key: string, callOptions?: StorageCallOptions): Promise<StorageObjectInfo | undefined> {
      const signal = callOptions?.signal;
      const k = fullKey(key);
      throwIfAborted(signal);
      try {
        const head = await call("stat", k, signal, () => client.send(new HeadObjectCommand({ Bucket: bucket, Key: k }), signal ? { abortSignal: signal } : {}));
        return info(key, head.ContentLength, head.LastModified, head.ETag);
      } catch (err) {
        if (err instanceof RunctlError && err.code === "NOT_FOUND") return undefined;
        throw err;
      }
    },

    async *list(listPrefix: string, callOptions?: StorageCallOptions): AsyncIterable<StorageObjectInfo> {
      const signal = callOptions?.signal;
      validateStorageKey(listPrefix, { allowPrefix: true });
      const full = `${base}${listPrefix}`;
      let token: string | undefined;
      do {
        throwIfAborted(signal);
        const continuation = token;
        const page = await call("list", full, signal, () =>
          client.send(
            new ListObjectsV2Command({ Bucket: bucket, Prefix: full, ContinuationToken: continuation }),
            signal ? { abortSignal: signal } : {},
          ),
        );
        for (const object of page.Contents ?? []) {
          // Skip "folder" markers (`a/b/`, made by consoles), which are no storage keys.
          if (!object.Key || !object.Key.startsWith(base) || object.Key.endsWith("/")) continue;
          yield info(object.Key.slice(base.length), object.Size, object.LastModified, object.ETag);
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
        if (page.IsTruncated && !token) {
          throw new RunctlError("STORAGE_ERROR", `S3 list of s3://${bucket}/${full}: a truncated page came without a continuation token.`);
        }
      } while (token);
    },

    async delete(keys: string | readonly string[], callOptions?: StorageCallOptions): Promise<void> {
      const signal = callOptions?.signal;
      const all = [...new Set((typeof keys === "string" ? [keys] : keys).map(fullKey))];
      throwIfAborted(signal);
      const batches: string[][] = [];
      for (let i = 0; i < all.length; i += DELETE_BATCH) batches.push(all.slice(i, i + DELETE_BATCH));
      const failed: { key: string; code: string; message: string }[] = [];
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < batches.length) {
          const batch = batches[next++]!;
          failed.push(...(await deleteBatch(batch, signal)));
        }
      };
      await Promise.all(Array.from({ length: Math.min(DELETE_CONCURRENCY, batches.length) }, worker));
      if (failed.length > 0) {
        const retryable = failed.every((f) => classifyS3Error({ name: f.code }).kind === "retryable");
        const shown = failed.slice(0, 5).map((f) => `${f.key} (${f.code}${f.message ? `: ${f.message}` : ""})`).join(", ");
        throw new RunctlError(
          "STORAGE_ERROR",
          `S3 delete in s3://${bucket}${base ? `/${prefix}` : ""}: ${failed.length} of ${all.length} objects were not deleted: ${shown}${failed.length > 5 ? ", …" : ""}.`,
          { retryable, details: { operation: "delete", bucket, failed } },
        );
      }
    },

    machineDescriptor(): S3StorageDescriptor {
      return { kind: "s3", bucket, prefix, region: options.region ?? null, endpoint: endpoint ?? null, forcePathStyle, checksums, backend };
    },

    async machineSecrets(callOptions?: StorageCallOptions): Promise<MachineSecrets | undefined> {
      if (!forwardCredentials) return undefined;
      const creds = await resolveClientCredentials(client, bucket, callOptions?.signal);
      remember(creds);
      return {
        aws: {
          accessKeyId: creds.accessKeyId,
          secretAccessKey: creds.secretAccessKey,
          ...(creds.sessionToken ? { sessionToken: creds.sessionToken } : {}),
        },
      };
    },
  };
}

/**
 * Rebuilds an {@link s3} storage from its machine descriptor (for example one saved in a run's
 * record), with the default credential chain unless `options` says otherwise. Settings in
 * `options` win over the descriptor's.
 *
 * @param descriptor - An `s3` descriptor as {@link S3Storage.machineDescriptor} returns it.
 * @param options - Extra settings (credentials, client, retry…).
 * @example
 * ```ts
 * const store = s3FromDescriptor({ kind: "s3", bucket: "ml-ckpt", prefix: "runs", region: "us-east-1",
 *   endpoint: null, forcePathStyle: false, checksums: "when_supported", backend: "auto" });
 * ```
 */
export function s3FromDescriptor(descriptor: S3StorageDescriptor, options: S3StorageOptions = {}): S3Storage {
  const uri = descriptor.prefix ? `s3://${descriptor.bucket}/${descriptor.prefix}` : `s3://${descriptor.bucket}`;
  return s3(uri, {
    ...(descriptor.region ? { region: descriptor.region } : {}),
    ...(descriptor.endpoint ? { endpoint: descriptor.endpoint } : {}),
    forcePathStyle: descriptor.forcePathStyle,
    checksums: descriptor.checksums,
    machineBackend: descriptor.backend,
    ...options,
  });
}
