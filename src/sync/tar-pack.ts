import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import type tar from "tar-stream";
import { RunctlError, abortError } from "../errors/runctl-error.js";
import { lazyRequire } from "../util/lazy-require.js";
import type { RemoteFileInfo } from "./diff.js";
import { READ_CHUNK_BYTES, SMALL_FILE_BYTES, SYNC_SLICE_MS, type LocalManifestEntry } from "./manifest.js";

// Loaded by the first sync, not with `runctl`.
const loadTarStream = lazyRequire<typeof tar>("tar-stream");

/**
 * Name of the tar member that always comes first and tells the agent what to delete and expect.
 *
 * @defaultValue `".runctl-sync/control.json"`
 * @example
 * ```ts
 * extract.on("entry", (h) => h.name === CONTROL_MEMBER_NAME && readControl(h));
 * ```
 */
export const CONTROL_MEMBER_NAME = ".runctl-sync/control.json";

/**
 * Name of the last tar member when some files are hashed while they are packed: it carries
 * `{"expect": ...}`, the full manifest known only once every file was read.
 *
 * @defaultValue `".runctl-sync/expect.json"`
 * @example
 * ```ts
 * if (header.name === EXPECT_MEMBER_NAME) expect = JSON.parse(body).expect;
 * ```
 */
export const EXPECT_MEMBER_NAME = ".runctl-sync/expect.json";

/**
 * A file to pack: a manifest entry whose sha256 may still be unknown (it is then computed from the
 * very bytes packed, and the file must not change while it is read).
 *
 * @defaultValue `sha256` undefined means "hash while packing"
 * @example
 * ```ts
 * const e: PackEntry = { path: "new.py", size: 10, mode: 0o644, mtimeMs: 1.7e12, ino: 42 };
 * ```
 */
export type PackEntry = Omit<LocalManifestEntry, "sha256"> & { readonly sha256?: string | undefined };

/**
 * The first member of a sync tar: paths to delete on the machine, and the full local manifest the
 * machine must match after applying the stream (verification, rust-lessons F10).
 *
 * @example
 * ```ts
 * const control: SyncControl = { delete: ["old.py"], expect: { "train.py": { size: 10, mode: 420, sha256: "ab.." } } };
 * ```
 *
 * @defaultValue `delete` may be empty; `expect` holds the whole local manifest, or is absent with
 * `expectTrailer` when it comes last, in {@link EXPECT_MEMBER_NAME}
 */
export interface SyncControl {
  /** Relative paths the agent deletes after writing the files. */
  readonly delete: readonly string[];
  /** Every file the folder must hold afterwards, with its size, mode and sha256. */
  readonly expect?: Readonly<Record<string, RemoteFileInfo>>;
  /** `expect` is the stream's last member, {@link EXPECT_MEMBER_NAME}. */
  readonly expectTrailer?: true;
}

/**
 * Options of {@link packSyncTar}.
 *
 * @defaultValue see each field; `root` and `entries` are required
 * @example
 * ```ts
 * const options: PackSyncTarOptions = { root: manifest.root, entries: manifest.entries, upload: diff.upload, delete: diff.delete };
 * ```
 */
export interface PackSyncTarOptions {
  /** Absolute local root the paths are relative to. */
  readonly root: string;
  /** The full local manifest (becomes `expect`); every path in `upload` must be in it, and every entry without a sha256. */
  readonly entries: readonly PackEntry[];
  /** Paths whose content is sent. @defaultValue every entry */
  readonly upload?: readonly string[] | undefined;
  /** Paths the agent deletes. @defaultValue `[]` */
  readonly delete?: readonly string[] | undefined;
  /** Stops packing; the stream is destroyed with ABORTED. */
  readonly signal?: AbortSignal | undefined;
  /** Called after each file was fully handed to the stream. @defaultValue undefined */
  readonly onFilePacked?: ((files: number, bytes: number) => void) | undefined;
  /** Called for each entry hashed while packed, with the time its read began (for a hash cache). @defaultValue undefined */
  readonly onFileHashed?: ((entry: LocalManifestEntry, startedAtMs: number) => void) | undefined;
}

/**
 * A tar being produced, from {@link packSyncTar}.
 *
 * @defaultValue none (both fields are always set)
 * @example
 * ```ts
 * const { stream, done }: SyncTarStream = packSyncTar({ root, entries });
 * stream.pipe(socket);
 * await done;
 * ```
 */
export interface SyncTarStream {
  /** The tar bytes, produced as fast as they are read (backpressure bounds memory). */
  readonly stream: Readable;
  /**
   * Settles when packing ends: the number of files and content bytes packed, or the error that
   * destroyed `stream` (SYNC_VERIFY_FAILED with `details.reason = "changed-while-packing"` when a file no
   * longer matches the manifest, ABORTED). Never left unhandled.
   */
  readonly done: Promise<{ readonly files: number; readonly bytes: number; readonly entries: readonly LocalManifestEntry[] }>;
}

/** The part of a tar-stream entry (a streamx Writable, typed loosely upstream) that packing uses. */
interface EntrySink {
  write(chunk: Uint8Array): boolean;
  end(): unknown;
  on(event: "drain" | "close" | "error", listener: () => void): unknown;
  off(event: "drain" | "close", listener: () => void): unknown;
}

// Same as hashing: never follow a symlink swapped in after the scan.
const OPEN_FLAGS = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0);

/**
 * Streams a sync tar: first {@link CONTROL_MEMBER_NAME} (`{delete, expect}`), then each file in
 * `upload` read from disk in 256 KiB chunks with its mode and mtime. Memory stays bounded whatever the
 * tree size: a chunk is read only when the consumer has taken the previous ones.
 *
 * Each file is re-hashed while it is sent. If it no longer has the manifest's size or sha256, packing
 * fails with SYNC_VERIFY_FAILED before the member's last chunk is written, so the agent sees a truncated
 * member (a tar error) rather than a complete file with the wrong content; a small file (up to
 * {@link SMALL_FILE_BYTES}) is read whole and checked before its header is written. {@link syncTree}
 * then rebuilds the manifest and tries again. An entry without a sha256 (a file the machine does not
 * have: comparing needs no hash) is hashed from the bytes sent, read once instead of twice; it must
 * keep its size and mtime while it is read, and `expect` then comes last ({@link EXPECT_MEMBER_NAME}).
 *
 * @defaultValue upload = every entry, delete = `[]`
 * @example
 * ```ts
 * const { stream, done } = packSyncTar({ root, entries: manifest.entries, upload: diff.upload, delete: diff.delete });
 * const exec = transport.exec([python, agent, "sync-apply", remoteDir], { stdin: stream });
 * const [packed, result] = await Promise.all([done, exec]);
 * ```
 */
export function packSyncTar(options: PackSyncTarOptions): SyncTarStream {
  const pack = loadTarStream().pack();
  // The error reaches callers through `done` (and the Readable below); streamx would otherwise throw it.
  pack.on("error", () => {});
  const byPath = new Map<string, PackEntry>(options.entries.map((e) => [e.path, e]));
  const upload = options.upload ?? options.entries.map((e) => e.path);

  const done = (async () => {
    const trailer = options.entries.some((e) => e.sha256 === undefined);
    const expectOf = (entries: readonly LocalManifestEntry[]): Record<string, RemoteFileInfo> =>
      Object.fromEntries(entries.map((e) => [e.path, { size: e.size, mode: e.mode, sha256: e.sha256 }]));
    const control: SyncControl = {
      delete: [...(options.delete ?? [])],
      ...(trailer ? { expectTrailer: true as const } : { expect: expectOf(options.entries as readonly LocalManifestEntry[]) }),
    };
    await addBufferEntry(pack, CONTROL_MEMBER_NAME, Buffer.from(JSON.stringify(control), "utf8"));
    let files = 0;
    let bytes = 0;
    let sliceStart = performance.now();
    for (const path of upload) {
      checkAbort(options.signal);
      const entry = byPath.get(path);
      if (entry === undefined) throw new RunctlError("INVALID_ARGUMENT", `packSyncTar: ${path} is in upload but not in the manifest.`);
      const startedAt = Date.now();
      const read = entry.size <= SMALL_FILE_BYTES ? await packSmallFile(pack, options.root, entry) : await packFile(pack, options.root, entry, options.signal);
      if (entry.sha256 === undefined) {
        const complete = { ...entry, ...read };
        byPath.set(path, complete);
        options.onFileHashed?.(complete, startedAt);
      }
      files++;
      bytes += entry.size;
      options.onFilePacked?.(files, bytes);
      if (performance.now() - sliceStart > SYNC_SLICE_MS) {
        await yieldToEventLoop();
        sliceStart = performance.now();
      }
    }
    const entries = options.entries.map((e) => byPath.get(e.path)!);
    const missing = entries.find((e) => e.sha256 === undefined);
    if (missing) throw new RunctlError("INVALID_ARGUMENT", `packSyncTar: ${missing.path} has no sha256 and is not in upload.`);
    const complete = entries as LocalManifestEntry[];
    if (trailer) await addBufferEntry(pack, EXPECT_MEMBER_NAME, Buffer.from(JSON.stringify({ expect: expectOf(complete) }), "utf8"));
    pack.finalize();
    return { files, bytes, entries: complete };
  })();
  done.catch((error: unknown) => pack.destroy(error instanceof Error ? error : new Error(String(error))));

  // A Node Readable (not streamx) so any transport can pipe or iterate it.
  const stream = Readable.from(pack, { objectMode: false });
  // Failures are reported through `done`; this keeps a consumer without an error listener from crashing.
  stream.on("error", () => {});
  stream.on("close", () => {
    if (!pack.destroyed) pack.destroy();
  });
  return { stream, done };
}

function checkAbort(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

function addBufferEntry(pack: tar.Pack, name: string, buffer: Buffer): Promise<void> {
  if (isClosed(pack)) return Promise.reject(streamClosed());
  return new Promise((resolve, reject) => {
    pack.entry({ name, size: buffer.length, mode: 0o644, type: "file", mtime: new Date() }, buffer, (err) => (err ? reject(err) : resolve()));
  });
}

function changed(path: string, why: string): RunctlError {
  return new RunctlError("SYNC_VERIFY_FAILED", `${path} changed while it was being synced (${why}); nothing corrupt was sent. Sync again once it is written.`, {
    retryable: true,
    details: { reason: "changed-while-packing", path },
  });
}

/** What a packed file turned out to be: its hash, and the stat facts of the read (for a hash cache). */
interface PackedRead {
  readonly sha256: string;
  readonly mtimeMs: number;
  readonly ino: number;
}

async function packFile(pack: tar.Pack, root: string, entry: PackEntry, signal: AbortSignal | undefined): Promise<PackedRead> {
  const handle = await open(join(root, entry.path), OPEN_FLAGS).catch((cause: NodeJS.ErrnoException) => {
    throw cause.code === "ENOENT" || cause.code === "ELOOP" ? changed(entry.path, cause.code === "ENOENT" ? "it was deleted" : "it became a symlink") : cause;
  });
  try {
    const st = await handle.stat();
    if (st.size !== entry.size) throw changed(entry.path, `size ${entry.size} became ${st.size}`);
    if (isClosed(pack)) throw streamClosed();
    let settle: (err: Error | null | undefined) => void = () => {};
    const finished = new Promise<void>((resolve, reject) => {
      settle = (err) => (err ? reject(err) : resolve());
    });
    const sink = pack.entry({ name: entry.path, size: entry.size, mode: entry.mode, type: "file", mtime: new Date(entry.mtimeMs) }, (err) =>
      settle(err),
    ) as unknown as EntrySink;
    // Destroying the pack destroys the open entry with the same error; `finished` carries it.
    sink.on("error", () => {});
    finished.catch(() => {});
    const hash = createHash("sha256");
    let remaining = entry.size;
    // The last chunk is held back until the sha256 matched, so a changed file never arrives whole.
    let pending: Buffer | undefined;
    while (remaining > 0) {
      checkAbort(signal);
      // A fresh buffer per chunk: the tar stream keeps a reference until the consumer reads it.
      const buffer = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, remaining));
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) throw changed(entry.path, "it got shorter");
      const chunk = buffer.subarray(0, bytesRead);
      hash.update(chunk);
      remaining -= bytesRead;
      if (pending) await writeChunk(pack, sink, pending);
      pending = chunk;
    }
    const sha256 = hash.digest("hex");
    if (entry.sha256 === undefined) {
      // Hashed now, from the bytes sent: they are the file's content if it did not change meanwhile.
      const after = await handle.stat();
      if (after.size !== st.size || after.mtimeMs !== st.mtimeMs) throw changed(entry.path, "it was modified while it was read");
    } else if (sha256 !== entry.sha256) throw changed(entry.path, "its content no longer matches its hash");
    const read: PackedRead = { sha256, mtimeMs: st.mtimeMs, ino: st.ino };
    if (pending) await writeChunk(pack, sink, pending);
    sink.end();
    await finished.catch((cause: unknown) => {
      throw isClosed(pack) ? streamClosed(cause) : cause;
    });
    return read;
  } finally {
    await handle.close();
  }
}

/**
 * Packs a small file as one buffer: read with synchronous calls (no thread-pool round trips, which
 * dominate for small files), checked against the manifest's size and sha256 before anything of it is
 * written, so a changed file never reaches the stream at all.
 */
async function packSmallFile(pack: tar.Pack, root: string, entry: PackEntry): Promise<PackedRead> {
  const { data, read } = readSmallFile(root, entry);
  if (isClosed(pack)) throw streamClosed();
  await new Promise<void>((resolve, reject) => {
    pack.entry({ name: entry.path, size: entry.size, mode: entry.mode, type: "file", mtime: new Date(entry.mtimeMs) }, data, (err) => (err ? reject(err) : resolve()));
  }).catch((cause: unknown) => {
    throw isClosed(pack) ? streamClosed(cause) : cause;
  });
  return read;
}

function readSmallFile(root: string, entry: PackEntry): { data: Buffer; read: PackedRead } {
  let fd: number;
  try {
    fd = openSync(join(root, entry.path), OPEN_FLAGS);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    throw code === "ENOENT" || code === "ELOOP" ? changed(entry.path, code === "ENOENT" ? "it was deleted" : "it became a symlink") : cause;
  }
  try {
    const st = fstatSync(fd);
    if (st.size !== entry.size) throw changed(entry.path, `size ${entry.size} became ${st.size}`);
    const data = Buffer.allocUnsafe(entry.size);
    let read = 0;
    while (read < entry.size) {
      const bytesRead = readSync(fd, data, read, entry.size - read, null);
      if (bytesRead === 0) throw changed(entry.path, "it got shorter");
      read += bytesRead;
    }
    const sha256 = createHash("sha256").update(data).digest("hex");
    if (entry.sha256 === undefined) {
      const after = fstatSync(fd);
      if (after.size !== st.size || after.mtimeMs !== st.mtimeMs) throw changed(entry.path, "it was modified while it was read");
    } else if (sha256 !== entry.sha256) throw changed(entry.path, "its content no longer matches its hash");
    return { data, read: { sha256, mtimeMs: st.mtimeMs, ino: st.ino } };
  } finally {
    closeSync(fd);
  }
}

function writeChunk(pack: tar.Pack, sink: EntrySink, chunk: Buffer): Promise<void> {
  if (isClosed(pack)) return Promise.reject(streamClosed());
  if (sink.write(chunk)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      sink.off("drain", onDrain);
      sink.off("close", onClose);
      pack.off("close", onClose);
    };
    const onDrain = (): void => {
      cleanup();
      resolve();
    };
    // The consumer went away: stop reading the file instead of waiting for a drain that never comes.
    const onClose = (): void => {
      cleanup();
      reject(streamClosed());
    };
    sink.on("drain", onDrain);
    sink.on("close", onClose);
    pack.on("close", onClose);
    if (isClosed(pack)) onClose();
  });
}

/**
 * Whether `error` is the "stream closed before it was fully sent" failure of {@link packSyncTar}: the
 * reader went away, so the reader's own outcome (the agent's reply) explains more.
 *
 * @defaultValue no defaults
 * @example
 * ```ts
 * if (packed.status === "rejected" && !isStreamClosed(packed.reason)) throw packed.reason;
 * ```
 */
export function isStreamClosed(error: unknown): boolean {
  return error instanceof RunctlError && error.details["reason"] === "stream-closed";
}

function isClosed(pack: tar.Pack): boolean {
  // streamx sets `destroying` as soon as destroy() is called, before `destroyed`.
  return pack.destroyed || (pack as unknown as { destroying?: boolean }).destroying === true;
}

function streamClosed(cause?: unknown): RunctlError {
  return new RunctlError("TRANSPORT_ERROR", "The sync stream was closed before it was fully sent.", {
    retryable: true,
    cause,
    details: { reason: "stream-closed" },
  });
}
