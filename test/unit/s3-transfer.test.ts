/**
 * Unit tests of runctl's own S3 transfers with the requests stubbed (aws-sdk-client-mock): the
 * multipart uploader's checksums and abort, and ranged downloads meeting a 412 (the object changed).
 */
import { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  S3Client,
  S3ServiceException,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { mockClient } from "aws-sdk-client-mock";
import { afterEach, describe, expect, it, vi } from "vitest";
import { s3, type S3StorageOptions } from "../../src/storage/s3/index.js";
import { caught } from "../support/caught.js";

const MiB = 1024 * 1024;
const FAST_RETRY = { retries: 3, minDelayMs: 1, maxDelayMs: 2, maxElapsedMs: 5_000 };
const mocks: ReturnType<typeof mockClient>[] = [];
afterEach(() => {
  for (const m of mocks.splice(0)) m.restore();
});

function mocked(options: S3StorageOptions = {}, checksums: "WHEN_SUPPORTED" | "WHEN_REQUIRED" = "WHEN_SUPPORTED") {
  const client = new S3Client({ region: "us-east-1", credentials: { accessKeyId: "AKIA", secretAccessKey: "secret" }, requestChecksumCalculation: checksums });
  const mock = mockClient(client);
  mocks.push(mock);
  return { mock, store: s3("s3://ml-ckpt/runs", { client, retry: FAST_RETRY, partSizeBytes: 5 * MiB, queueSize: 2, ...options }) };
}

function bytes(n: number): Readable {
  return Readable.from([Buffer.alloc(n, 7)], { objectMode: false });
}

describe("s3() multipart uploader (requests stubbed)", () => {
  it("with request checksums on, asks for CRC32 parts and hands each part's checksum back on Complete", async () => {
    const { mock, store } = mocked();
    mock.on(CreateMultipartUploadCommand).resolves({ UploadId: "u1" });
    mock.on(UploadPartCommand).callsFake((input: { PartNumber: number }) => ({ ETag: `"e${input.PartNumber}"`, ChecksumCRC32: `crc${input.PartNumber}` }));
    mock.on(CompleteMultipartUploadCommand).resolves({});
    await store.put("m.bin", bytes(12 * MiB));
    expect(mock.commandCalls(CreateMultipartUploadCommand)[0]!.args[0].input).toEqual({ Bucket: "ml-ckpt", Key: "runs/m.bin", ChecksumAlgorithm: "CRC32" });
    expect(mock.commandCalls(UploadPartCommand).map((c) => c.args[0].input.ContentLength)).toEqual([5 * MiB, 5 * MiB, 2 * MiB]);
    expect(mock.commandCalls(CompleteMultipartUploadCommand)[0]!.args[0].input.MultipartUpload?.Parts).toEqual([
      { PartNumber: 1, ETag: '"e1"', ChecksumCRC32: "crc1" },
      { PartNumber: 2, ETag: '"e2"', ChecksumCRC32: "crc2" },
      { PartNumber: 3, ETag: '"e3"', ChecksumCRC32: "crc3" },
    ]);
  });

  it("with checksums only when required, Create names no algorithm and Complete no checksums", async () => {
    const { mock, store } = mocked({}, "WHEN_REQUIRED");
    mock.on(CreateMultipartUploadCommand).resolves({ UploadId: "u1" });
    mock.on(UploadPartCommand).callsFake((input: { PartNumber: number }) => ({ ETag: `"e${input.PartNumber}"` }));
    mock.on(CompleteMultipartUploadCommand).resolves({});
    await store.put("m.bin", bytes(6 * MiB));
    expect(mock.commandCalls(CreateMultipartUploadCommand)[0]!.args[0].input).toEqual({ Bucket: "ml-ckpt", Key: "runs/m.bin" });
    expect(mock.commandCalls(CompleteMultipartUploadCommand)[0]!.args[0].input.MultipartUpload?.Parts).toEqual([
      { PartNumber: 1, ETag: '"e1"' },
      { PartNumber: 2, ETag: '"e2"' },
    ]);
  });

  it("a caller's abort mid-upload is ABORTED, destroys the body and aborts the multipart upload", async () => {
    const { mock, store } = mocked();
    const controller = new AbortController();
    mock.on(CreateMultipartUploadCommand).resolves({ UploadId: "u9" });
    mock.on(UploadPartCommand).callsFake(async (input: { PartNumber: number }) => {
      if (input.PartNumber === 2) controller.abort();
      return { ETag: `"e${input.PartNumber}"` };
    });
    mock.on(AbortMultipartUploadCommand).resolves({});
    const body = Readable.from(
      (function* () {
        for (;;) yield Buffer.alloc(MiB, 1);
      })(),
      { objectMode: false },
    );
    const err = await caught(store.put("m.bin", body, { signal: controller.signal }));
    expect(err.code).toBe("ABORTED");
    expect(body.destroyed).toBe(true);
    await vi.waitFor(() => expect(mock.commandCalls(AbortMultipartUploadCommand).map((c) => c.args[0].input)).toEqual([{ Bucket: "ml-ckpt", Key: "runs/m.bin", UploadId: "u9" }]));
    expect(mock.commandCalls(CompleteMultipartUploadCommand)).toHaveLength(0);
  });
});

describe("s3() ranged downloads (requests stubbed)", () => {
  it("a 412 on a later range (the object changed) fails the stream with STORAGE_ERROR", async () => {
    const { mock, store } = mocked();
    const total = 12 * MiB;
    mock.on(GetObjectCommand).callsFake((input: { Range?: string; IfMatch?: string }) => {
      const [start, end] = (input.Range ?? "").replace("bytes=", "").split("-").map(Number) as [number, number];
      if (start > 0) {
        expect(input.IfMatch).toBe('"v1"');
        throw new S3ServiceException({ name: "PreconditionFailed", $fault: "client", $metadata: { httpStatusCode: 412 }, message: "At least one of the pre-conditions you specified did not hold" });
      }
      return { Body: Readable.from([Buffer.alloc(end - start + 1, 1)], { objectMode: false }), ContentRange: `bytes ${start}-${end}/${total}`, ContentLength: end - start + 1, ETag: '"v1"' };
    });
    const stream = await store.get("m.bin");
    const err = await caught((async () => {
      for await (const _ of stream) void _;
    })());
    expect(err).toMatchObject({ code: "STORAGE_ERROR", retryable: false, details: { httpStatus: 412 } });
    expect(err.message).toContain("changed while it was being read");
    expect(mock.commandCalls(GetObjectCommand)[0]!.args[0].input.Range).toBe(`bytes=0-${5 * MiB - 1}`);
  });
});
