/**
 * Unit tests of the S3 storage without a server: URI and option validation, error mapping with the
 * error shapes the AWS SDK v3 really produces (modeled exceptions, S3ServiceException with an AWS
 * code and HTTP status, Node socket errors), retries, batching, pagination, descriptors and secrets.
 * Calls go to an injected S3Client whose `send` is stubbed by aws-sdk-client-mock.
 */
import { Readable } from "node:stream";
import { inspect } from "node:util";
import {
  AbortMultipartUploadCommand,
  AccessDenied,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  NoSuchBucket,
  NoSuchKey,
  NotFound,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { mockClient } from "aws-sdk-client-mock";
import { afterEach, describe, expect, it, vi } from "vitest";
import { classifyS3Error } from "../../src/storage/s3/s3-errors.js";
import { parseS3Uri, s3, s3FromDescriptor, type S3StorageOptions } from "../../src/storage/s3/index.js";
import { caught } from "../support/caught.js";

const SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKENvalue0123456789";
const CREDS = { accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: SECRET, sessionToken: TOKEN };
const FAST_RETRY = { retries: 3, minDelayMs: 1, maxDelayMs: 2, maxElapsedMs: 5_000 };

const mocks: ReturnType<typeof mockClient>[] = [];
afterEach(() => {
  for (const m of mocks.splice(0)) m.restore();
});

/** A storage over an injected client whose calls are stubbed. */
function mocked(uri = "s3://ml-ckpt/team/runs", options: S3StorageOptions = {}) {
  const client = new S3Client({ region: "us-east-1", credentials: CREDS });
  const mock = mockClient(client);
  mocks.push(mock);
  const store = s3(uri, { client, retry: FAST_RETRY, ...options });
  return { client, mock, store };
}

/** What AWS sends for throttling: an S3ServiceException named by its code, HTTP 503. */
function slowDown(): S3ServiceException {
  return new S3ServiceException({ name: "SlowDown", $fault: "server", $metadata: { httpStatusCode: 503 }, message: "Please reduce your request rate." });
}

function serviceError(name: string, status: number, message: string): S3ServiceException {
  return new S3ServiceException({ name, $fault: status >= 500 ? "server" : "client", $metadata: { httpStatusCode: status }, message });
}

/** A Node socket error as the SDK's node-http-handler passes it through. */
function socketError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code, errno: -104, syscall: "read", $metadata: {} });
}

describe("s3() URI and options", () => {
  it.each([
    ["s3://ml-ckpt", "ml-ckpt", ""],
    ["s3://ml-ckpt/", "ml-ckpt", ""],
    ["s3://ml-ckpt/team/runs", "ml-ckpt", "team/runs"],
    ["s3://ml-ckpt/team/runs/", "ml-ckpt", "team/runs"],
    ["s3://a.b-c.123/x", "a.b-c.123", "x"],
  ])("parses %s", (uri, bucket, prefix) => {
    const parsed = parseS3Uri(uri);
    expect(parsed).toMatchObject({ bucket, prefix });
    expect(s3(uri, { client: new S3Client({ region: "us-east-1" }) }).uri).toBe(prefix ? `s3://${bucket}/${prefix}` : `s3://${bucket}`);
  });

  it.each([
    "",
    "ml-ckpt/x",
    "http://ml-ckpt/x",
    "S3://ml-ckpt",
    "s3://",
    "s3:///prefix",
    "s3://ab",
    "s3://Upper-Case",
    "s3://under_score",
    "s3://-leading",
    "s3://trailing-",
    "s3://a..b",
    "s3://192.168.1.1",
    "s3://xn--bucket",
    `s3://${"a".repeat(64)}`,
    "s3://ml-ckpt//double",
    "s3://ml-ckpt/a/../b",
    "s3://ml-ckpt/./a",
    "s3://ml-ckpt/a\\b",
    "s3://ml-ckpt/a\0b",
  ])("refuses %j with INVALID_URI before any call", (uri) => {
    const client = new S3Client({ region: "us-east-1" });
    const mock = mockClient(client);
    mocks.push(mock);
    expect(() => s3(uri, { client })).toThrowError(expect.objectContaining({ code: "INVALID_URI" }) as Error);
    expect(mock.calls()).toHaveLength(0);
  });

  it.each<[string, S3StorageOptions]>([
    ["partSizeBytes below 5 MiB", { partSizeBytes: 1024 * 1024 }],
    ["fractional partSizeBytes", { partSizeBytes: 5 * 1024 * 1024 + 0.5 }],
    ["queueSize 0", { queueSize: 0 }],
    ["unknown checksums", { checksums: "always" as never }],
    ["unknown machineBackend", { machineBackend: "rclone" as never }],
    ["credentials in the endpoint", { endpoint: "http://key:secret@127.0.0.1:9000" }],
    ["a non-http endpoint", { endpoint: "ftp://127.0.0.1" }],
    ["a region that is no region", { region: "us east 1" }],
    ["a negative retry budget", { retry: { maxElapsedMs: -1 } }],
  ])("refuses %s with INVALID_ARGUMENT", (_, options) => {
    expect(() => s3("s3://ml-ckpt", options)).toThrowError(expect.objectContaining({ code: "INVALID_ARGUMENT" }) as Error);
  });

  it.each([`http://AKIA:${SECRET}@127.0.0.1:9000`, "http://AKIA:plainsecret@127.0.0.1:9000"])("the endpoint error never echoes credentials (%#)", (endpoint) => {
    try {
      s3("s3://ml-ckpt", { endpoint });
      expect.unreachable();
    } catch (err) {
      expect(err).toMatchObject({ code: "INVALID_ARGUMENT" });
      expect(inspect(err)).not.toContain(SECRET);
      expect(inspect(err)).not.toContain("plainsecret");
    }
  });

  it("maps checksums onto the SDK's settings and turns the SDK's own retries off", async () => {
    const strict = s3("s3://ml-ckpt", { endpoint: "http://127.0.0.1:9/", forcePathStyle: true, checksums: "when_required", credentials: CREDS });
    expect(await strict.client.config.requestChecksumCalculation()).toBe("WHEN_REQUIRED");
    expect(await strict.client.config.responseChecksumValidation()).toBe("WHEN_REQUIRED");
    expect(await strict.client.config.maxAttempts()).toBe(1);
    expect(await strict.client.config.region()).toBe("us-east-1"); // an endpoint without a region: us-east-1
    expect(strict.client.config.forcePathStyle).toBe(true);
    const aws = s3("s3://ml-ckpt", { region: "eu-west-1", credentials: CREDS });
    expect(await aws.client.config.requestChecksumCalculation()).toBe("WHEN_SUPPORTED");
    expect(await aws.client.config.responseChecksumValidation()).toBe("WHEN_SUPPORTED");
  });
});

describe("s3() machine descriptor and secrets", () => {
  it("describes the bucket for any machine, without secrets", () => {
    const store = s3("s3://ml-ckpt/team/runs/", {
      region: "us-east-1",
      endpoint: "http://10.77.0.1:4568/",
      forcePathStyle: true,
      checksums: "when_required",
      machineBackend: "cli",
      credentials: CREDS,
    });
    const expected = { kind: "s3", bucket: "ml-ckpt", prefix: "team/runs", region: "us-east-1", endpoint: "http://10.77.0.1:4568", forcePathStyle: true, checksums: "when_required", backend: "cli" };
    expect(store.machineDescriptor({ sharesLocalFilesystem: true })).toEqual(expected);
    expect(store.machineDescriptor({ sharesLocalFilesystem: false })).toEqual(expected);
    expect(JSON.stringify(store.machineDescriptor())).not.toContain(SECRET);
    expect(s3("s3://ml-ckpt").machineDescriptor()).toEqual({
      kind: "s3", bucket: "ml-ckpt", prefix: "", region: null, endpoint: null, forcePathStyle: false, checksums: "when_supported", backend: "auto",
    });
  });

  it("s3FromDescriptor rebuilds the same storage", () => {
    const original = s3("s3://ml-ckpt/runs", { region: "eu-west-1", endpoint: "http://127.0.0.1:9000", forcePathStyle: true, checksums: "when_required", machineBackend: "boto3" });
    const rebuilt = s3FromDescriptor(original.machineDescriptor());
    expect(rebuilt.uri).toBe("s3://ml-ckpt/runs");
    expect(rebuilt.machineDescriptor()).toEqual(original.machineDescriptor());
  });

  it("forwards the client's credentials (static or from a provider), or none with forwardCredentials: false", async () => {
    const given = { ...CREDS };
    expect(await s3("s3://ml-ckpt", { region: "us-east-1", credentials: given }).machineSecrets()).toEqual({ aws: CREDS });
    expect(given).toEqual(CREDS); // the caller's object is not annotated by the SDK
    let calls = 0;
    const provider = async () => {
      calls++;
      return { accessKeyId: "AKIAPROVIDER", secretAccessKey: SECRET };
    };
    expect(await s3("s3://ml-ckpt", { region: "us-east-1", credentials: provider }).machineSecrets()).toEqual({ aws: { accessKeyId: "AKIAPROVIDER", secretAccessKey: SECRET } });
    expect(calls).toBe(1);
    expect(await s3("s3://ml-ckpt", { region: "us-east-1", credentials: CREDS, forwardCredentials: false }).machineSecrets()).toBeUndefined();
    const injected = new S3Client({ region: "us-east-1", credentials: { ...CREDS } });
    expect(await s3("s3://ml-ckpt", { client: injected }).machineSecrets()).toEqual({ aws: CREDS });
  });

  it("a credential chain that fails gives STORAGE_ERROR naming the way out", async () => {
    const failing = async () => {
      throw Object.assign(new Error("Could not load credentials from any providers"), { name: "CredentialsProviderError" });
    };
    const err = await caught(s3("s3://ml-ckpt", { region: "us-east-1", credentials: failing }).machineSecrets());
    expect(err.code).toBe("STORAGE_ERROR");
    expect(err.message).toContain("forwardCredentials: false");
    expect(err.message).toContain("s3://ml-ckpt");
  });
});

describe("s3() error mapping (AWS SDK error shapes)", () => {
  it.each([
    ["SlowDown 503", () => slowDown()],
    ["Throttling 503", () => serviceError("Throttling", 503, "Rate exceeded")],
    ["RequestLimitExceeded", () => serviceError("RequestLimitExceeded", 503, "Request limit exceeded.")],
    ["TooManyRequests 429", () => serviceError("TooManyRequestsException", 429, "Too many requests")],
    ["InternalError 500", () => serviceError("InternalError", 500, "We encountered an internal error. Please try again.")],
    ["an unknown 502", () => serviceError("UnknownError", 502, "Bad Gateway")],
    ["ServiceUnavailable 503", () => serviceError("ServiceUnavailable", 503, "Service Unavailable")],
    ["ECONNREFUSED", () => socketError("ECONNREFUSED", "connect ECONNREFUSED 127.0.0.1:9000")],
    ["ECONNRESET", () => socketError("ECONNRESET", "socket hang up")],
    ["EPIPE", () => socketError("EPIPE", "write EPIPE")],
    ["TimeoutError", () => Object.assign(new Error("Connection timed out after 10000 ms"), { name: "TimeoutError" })],
  ])("retries %s and then succeeds", async (_, error) => {
    const { mock, store } = mocked();
    mock.on(PutObjectCommand).rejectsOnce(error()).rejectsOnce(error()).resolves({ ETag: '"abc"' });
    await store.put("a.txt", "hello");
    const calls = mock.commandCalls(PutObjectCommand);
    expect(calls).toHaveLength(3);
    expect(calls[0]!.args[0].input).toMatchObject({ Bucket: "ml-ckpt", Key: "team/runs/a.txt" });
  });

  it("gives up after the retry budget with a retryable STORAGE_ERROR", async () => {
    const { mock, store } = mocked();
    mock.on(HeadObjectCommand).rejects(slowDown());
    const err = await caught(store.stat("a.txt"));
    expect(err).toMatchObject({ code: "STORAGE_ERROR", retryable: true, details: { awsCode: "SlowDown", httpStatus: 503, attempts: 4, bucket: "ml-ckpt", key: "team/runs/a.txt" } });
    expect(err.message).toContain("s3://ml-ckpt/team/runs/a.txt");
    expect(err.message).toContain("after 4 attempts");
    expect(mock.commandCalls(HeadObjectCommand)).toHaveLength(4);
  });

  it("honours the total time budget", async () => {
    const { mock, store } = mocked("s3://ml-ckpt", { retry: { retries: 1000, minDelayMs: 20, maxDelayMs: 20, maxElapsedMs: 300 } });
    mock.on(GetObjectCommand).rejects(socketError("ECONNREFUSED", "connect ECONNREFUSED 127.0.0.1:9000"));
    const started = Date.now();
    const err = await caught(store.get("a.txt"));
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(err).toMatchObject({ code: "STORAGE_ERROR", retryable: true });
    expect(err.message).toContain("ECONNREFUSED");
  });

  it("NoSuchBucket is a non-retryable STORAGE_ERROR naming the bucket, after one attempt", async () => {
    const { mock, store } = mocked();
    mock.on(PutObjectCommand).rejects(new NoSuchBucket({ $metadata: { httpStatusCode: 404 }, message: "The specified bucket does not exist" }));
    const err = await caught(store.put("a.txt", "x"));
    expect(err).toMatchObject({ code: "STORAGE_ERROR", retryable: false, details: { awsCode: "NoSuchBucket", bucket: "ml-ckpt" } });
    expect(err.message).toMatch(/bucket ml-ckpt does not exist/);
    expect(mock.commandCalls(PutObjectCommand)).toHaveLength(1);
  });

  it.each([
    ["modeled AccessDenied", () => new AccessDenied({ $metadata: { httpStatusCode: 403 }, message: "Access Denied" })],
    ["AccessDenied as S3ServiceException 403", () => serviceError("AccessDenied", 403, "Access Denied")],
    ["a bare 403", () => serviceError("UnknownError", 403, "Forbidden")],
  ])("%s is a non-retryable STORAGE_ERROR naming bucket and key", async (_, error) => {
    const { mock, store } = mocked();
    mock.on(GetObjectCommand).rejects(error());
    const err = await caught(store.get("ckpt/model.pt"));
    expect(err).toMatchObject({ code: "STORAGE_ERROR", retryable: false, details: { httpStatus: 403 } });
    expect(err.message).toContain("access denied");
    expect(err.message).toContain("s3://ml-ckpt/team/runs/ckpt/model.pt");
    expect(mock.commandCalls(GetObjectCommand)).toHaveLength(1);
  });

  it("a missing object: get is NOT_FOUND, stat is undefined", async () => {
    const { mock, store } = mocked();
    mock.on(GetObjectCommand).rejects(new NoSuchKey({ $metadata: { httpStatusCode: 404 }, message: "The specified key does not exist." }));
    mock.on(HeadObjectCommand).rejects(new NotFound({ $metadata: { httpStatusCode: 404 }, message: "UnknownError" }));
    const err = await caught(store.get("nope.txt"));
    expect(err).toMatchObject({ code: "NOT_FOUND", retryable: false });
    expect(err.message).toContain("s3://ml-ckpt/team/runs/nope.txt");
    expect(await store.stat("nope.txt")).toBeUndefined();
    expect(mock.commandCalls(HeadObjectCommand)).toHaveLength(1);
  });

  it("rejected credentials: STORAGE_ERROR whose message, JSON and inspection never show the secret", async () => {
    const { mock, store } = mocked("s3://ml-ckpt", { credentials: CREDS });
    await store.machineSecrets(); // the storage now knows the resolved secrets too
    // A contrived server message echoing the secret: it must be scrubbed.
    mock.on(PutObjectCommand).rejects(serviceError("SignatureDoesNotMatch", 403, `The request signature we calculated does not match (key ${SECRET}, token ${TOKEN})`));
    const err = await caught(store.put("a.txt", "x"));
    expect(err.code).toBe("STORAGE_ERROR");
    expect(err.message).toContain("credentials were rejected");
    for (const text of [err.message, JSON.stringify(err.toJSON()), JSON.stringify(err.details)]) {
      expect(text).not.toContain(SECRET);
      expect(text).not.toContain(TOKEN);
    }
  });

  it("an unknown client error is a non-retryable STORAGE_ERROR with the AWS code", async () => {
    const { mock, store } = mocked();
    mock.on(PutObjectCommand).rejects(serviceError("InvalidStorageClass", 400, "The storage class you specified is not valid"));
    const err = await caught(store.put("a.txt", "x"));
    expect(err).toMatchObject({ code: "STORAGE_ERROR", retryable: false, details: { awsCode: "InvalidStorageClass", httpStatus: 400 } });
    expect(mock.commandCalls(PutObjectCommand)).toHaveLength(1);
  });

  it("classifies the SDK's shapes", () => {
    expect(classifyS3Error(slowDown())).toEqual({ kind: "retryable", code: "SlowDown", httpStatus: 503 });
    expect(classifyS3Error(new NoSuchBucket({ $metadata: { httpStatusCode: 404 }, message: "x" })).kind).toBe("no_bucket");
    expect(classifyS3Error(serviceError("AccessDenied", 403, "Access Denied")).kind).toBe("access_denied");
    expect(classifyS3Error(serviceError("PreconditionFailed", 412, "x")).kind).toBe("precondition");
    expect(classifyS3Error(socketError("ECONNRESET", "socket hang up"))).toMatchObject({ kind: "retryable", code: "ECONNRESET" });
    expect(classifyS3Error(new Error("wrapped", { cause: socketError("ECONNREFUSED", "connect ECONNREFUSED") })).kind).toBe("retryable");
    expect(classifyS3Error(new Error("plain")).kind).toBe("other");
  });
});

describe("s3() multipart uploads (requests stubbed)", () => {
  /** `parts` parts of 5 MiB, produced on demand; counts what was read. */
  function partsStream(parts: number): { stream: Readable; produced: () => number } {
    let produced = 0;
    async function* gen(): AsyncGenerator<Buffer> {
      for (let i = 0; i < parts * 5; i++) {
        produced++;
        yield Buffer.alloc(1024 * 1024, i);
      }
    }
    return { stream: Readable.from(gen(), { objectMode: false }), produced: () => produced };
  }

  it("retries a throttled part on its own and completes the upload", async () => {
    const { mock, store } = mocked("s3://ml-ckpt/runs", { partSizeBytes: 5 * 1024 * 1024, queueSize: 2 });
    mock.on(CreateMultipartUploadCommand).resolves({ UploadId: "u1" });
    let throttled = false;
    mock.on(UploadPartCommand).callsFake((input: { PartNumber: number }) => {
      if (input.PartNumber === 2 && !throttled) {
        throttled = true;
        throw slowDown();
      }
      return { ETag: `"etag-${input.PartNumber}"` };
    });
    mock.on(CompleteMultipartUploadCommand).resolves({ ETag: '"whole"' });
    await store.put("model.bin", partsStream(4).stream);
    expect(mock.commandCalls(UploadPartCommand).map((c) => c.args[0].input.PartNumber).sort()).toEqual([1, 2, 2, 3, 4]);
    const complete = mock.commandCalls(CompleteMultipartUploadCommand)[0]!.args[0].input;
    expect(complete).toMatchObject({ Bucket: "ml-ckpt", Key: "runs/model.bin", UploadId: "u1" });
    expect(complete.MultipartUpload?.Parts?.map((p) => p.PartNumber)).toEqual([1, 2, 3, 4]);
    expect(mock.commandCalls(AbortMultipartUploadCommand)).toHaveLength(0);
  });

  it("a part that fails for good stops reading the stream, aborts the upload and is the error reported", async () => {
    const { mock, store } = mocked("s3://ml-ckpt/runs", { partSizeBytes: 5 * 1024 * 1024, queueSize: 2 });
    mock.on(CreateMultipartUploadCommand).resolves({ UploadId: "u1" });
    mock.on(UploadPartCommand).callsFake((input: { PartNumber: number }) => {
      if (input.PartNumber === 3) throw new AccessDenied({ $metadata: { httpStatusCode: 403 }, message: "Access Denied" });
      return { ETag: `"etag-${input.PartNumber}"` };
    });
    mock.on(AbortMultipartUploadCommand).resolves({});
    const source = partsStream(200); // 1,000 MiB if it were all read
    const err = await caught(store.put("model.bin", source.stream));
    expect(err).toMatchObject({ code: "STORAGE_ERROR", retryable: false, details: { httpStatus: 403, key: "runs/model.bin" } });
    expect(err.message).toContain("access denied");
    expect(source.stream.destroyed).toBe(true);
    await vi.waitFor(() => expect(mock.commandCalls(AbortMultipartUploadCommand)).toHaveLength(1));
    expect(mock.commandCalls(AbortMultipartUploadCommand)[0]!.args[0].input).toEqual({ Bucket: "ml-ckpt", Key: "runs/model.bin", UploadId: "u1" });
    expect(source.produced()).toBeLessThan(60); // a few parts, not 1,000 MiB
    expect(mock.commandCalls(CompleteMultipartUploadCommand)).toHaveLength(0);
  });
});

describe("s3() keys, abort, listing and batch deletes", () => {
  it.each(["../x", "/abs", "a//b", "", "a\\b", "a/./b"])("refuses key %j with INVALID_STORAGE_KEY and sends nothing", async (key) => {
    const { mock, store } = mocked();
    await expect(store.put(key, "x")).rejects.toMatchObject({ code: "INVALID_STORAGE_KEY" });
    await expect(store.get(key)).rejects.toMatchObject({ code: "INVALID_STORAGE_KEY" });
    await expect(store.stat(key)).rejects.toMatchObject({ code: "INVALID_STORAGE_KEY" });
    await expect(store.delete([key])).rejects.toMatchObject({ code: "INVALID_STORAGE_KEY" });
    expect(mock.calls()).toHaveLength(0);
  });

  it("an aborted signal stops a call before it is sent, and a backoff when it fires", async () => {
    const { mock, store } = mocked("s3://ml-ckpt", { retry: { retries: 100, minDelayMs: 10_000, maxDelayMs: 10_000, maxElapsedMs: 600_000 } });
    await expect(store.put("a.txt", "x", { signal: AbortSignal.abort() })).rejects.toMatchObject({ code: "ABORTED" });
    expect(mock.calls()).toHaveLength(0);
    mock.on(HeadObjectCommand).rejects(slowDown());
    const controller = new AbortController();
    const started = Date.now();
    setTimeout(() => controller.abort(), 100);
    await expect(store.stat("a.txt", { signal: controller.signal })).rejects.toMatchObject({ code: "ABORTED" });
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("list pages through ListObjectsV2 and yields keys relative to the prefix", async () => {
    const { mock, store } = mocked();
    const date = new Date("2026-01-01T00:00:00Z");
    mock
      .on(ListObjectsV2Command)
      .resolvesOnce({ IsTruncated: true, NextContinuationToken: "t1", Contents: [{ Key: "team/runs/r1/a", Size: 1, ETag: '"e1"', LastModified: date }, { Key: "team/runs/r1/", Size: 0 }] })
      .rejectsOnce(slowDown())
      .resolvesOnce({ IsTruncated: false, Contents: [{ Key: "team/runs/r1/b/c", Size: 2 }] });
    const seen = [];
    for await (const o of store.list("r1/")) seen.push(o);
    expect(seen).toEqual([{ key: "r1/a", size: 1, etag: "e1", modifiedAt: date }, { key: "r1/b/c", size: 2 }]);
    const inputs = mock.commandCalls(ListObjectsV2Command).map((c) => c.args[0].input);
    expect(inputs).toEqual([
      { Bucket: "ml-ckpt", Prefix: "team/runs/r1/" },
      { Bucket: "ml-ckpt", Prefix: "team/runs/r1/", ContinuationToken: "t1" },
      { Bucket: "ml-ckpt", Prefix: "team/runs/r1/", ContinuationToken: "t1" },
    ]);
    await expect((async () => { for await (const _ of store.list("../")) void _; })()).rejects.toMatchObject({ code: "INVALID_STORAGE_KEY" });
  });

  it("delete sends DeleteObjects in batches of 1,000 and reports per-key errors as STORAGE_ERROR", async () => {
    const { mock, store } = mocked();
    mock.on(DeleteObjectsCommand).callsFake((input: { Delete: { Objects: { Key: string }[] } }) => {
      const keys = input.Delete.Objects.map((o) => o.Key);
      return {
        Errors: keys
          .filter((k) => k.endsWith("/k-0007") || k.endsWith("/k-1500") || k.endsWith("/k-2001"))
          .map((Key) => ({ Key, Code: Key.endsWith("2001") ? "NoSuchKey" : "AccessDenied", Message: "Access Denied" })),
      };
    });
    const keys = Array.from({ length: 2500 }, (_, i) => `r1/k-${String(i).padStart(4, "0")}`);
    const err = await caught(store.delete([...keys, "r1/k-0001"]));
    const batches = mock.commandCalls(DeleteObjectsCommand).map((c) => c.args[0].input.Delete!.Objects!.length).sort();
    expect(batches).toEqual([1000, 1000, 500]);
    expect(mock.commandCalls(DeleteObjectsCommand)[0]!.args[0].input).toMatchObject({ Bucket: "ml-ckpt", Delete: { Quiet: true } });
    expect(err).toMatchObject({ code: "STORAGE_ERROR", retryable: false });
    expect(err.message).toContain("2 of 2500 objects were not deleted");
    expect(err.message).toContain("r1/k-0007 (AccessDenied");
    const failed = [...(err.details["failed"] as { key: string }[])].sort((a, b) => (a.key < b.key ? -1 : 1));
    expect(failed).toEqual([
      { key: "r1/k-0007", code: "AccessDenied", message: "Access Denied" },
      { key: "r1/k-1500", code: "AccessDenied", message: "Access Denied" },
    ]);
  });

  it("delete of nothing sends nothing; a single key is one request", async () => {
    const { mock, store } = mocked();
    mock.on(DeleteObjectsCommand).resolves({});
    await store.delete([]);
    expect(mock.calls()).toHaveLength(0);
    await store.delete("r1/a");
    expect(mock.commandCalls(DeleteObjectsCommand)[0]!.args[0].input.Delete!.Objects).toEqual([{ Key: "team/runs/r1/a" }]);
  });
});
