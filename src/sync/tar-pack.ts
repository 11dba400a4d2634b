import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { createHash } from "node:crypto";
import { open, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { RunctlError, abortError } from "../errors/runctl-error.js";
import type { RemoteFileInfo } from "./diff.js";
import { SMALL_FILE_BYTES, SYNC_SLICE_MS, type LocalManifestEntry } from "./manifest.js";

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

// Same as hashing: never follow a symlink swapped in after the scan.
const OPEN_FLAGS = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0);

/**
 * Size of the buffers the tar is produced in: headers and file contents are read straight into
 * them, and each full one is one chunk of the stream (one write into the SSH channel).
 */
const BATCH_BYTES = 256 * 1024;
const BLOCK = 512;
/** The largest size and mtime an 11-digit octal ustar field holds. */
const MAX_OCTAL_11 = 0o77777777777;

/**
 * Streams a sync tar: first {@link CONTROL_MEMBER_NAME} (`{delete, expect}`), then each file in
 * `upload` with its mode and mtime. The tar is written directly (ustar headers, a pax header for a
 * path longer than ustar holds) into 256 KiB buffers that file contents are read straight into, so
 * a file costs a header and a read, not a stream of small chunks. Memory stays bounded whatever the
 * tree size: the next buffer is filled only when the consumer has taken the previous ones.
 *
 * Each file is re-hashed while it is sent. If it no longer has the manifest's size or sha256, packing
 * fails with SYNC_VERIFY_FAILED before the member's last bytes are handed to the stream, so the agent
 * sees a truncated member (a tar error) rather than a complete file with the wrong content; a small
 * file (up to {@link SMALL_FILE_BYTES}) is read whole and checked before its header is written. {@link syncTree}
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
  const out = new TarOut();
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
    await out.member(CONTROL_MEMBER_NAME, Buffer.from(JSON.stringify(control), "utf8"));
    let files = 0;
    let bytes = 0;
    let sliceStart = performance.now();
    for (const path of upload) {
      checkAbort(options.signal);
      const entry = byPath.get(path);
      if (entry === undefined) throw new RunctlError("INVALID_ARGUMENT", `packSyncTar: ${path} is in upload but not in the manifest.`);
      const startedAt = Date.now();
      const read = entry.size <= SMALL_FILE_BYTES ? await packSmallFile(out, options.root, entry) : await packFile(out, options.root, entry, options.signal);
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
    if (trailer) await out.member(EXPECT_MEMBER_NAME, Buffer.from(JSON.stringify({ expect: expectOf(complete) }), "utf8"));
    await out.finish();
    return { files, bytes, entries: complete };
  })();
  done.catch((error: unknown) => out.fail(error instanceof Error ? error : new Error(String(error))));
  return { stream: out.stream, done };
}

/**
 * The tar being written: a buffer being filled, handed to `stream` when full. `reserve(n)` makes room
 * for n contiguous bytes (pushing the full buffer first, and waiting while the consumer is behind).
 */
class TarOut {
  readonly stream: Readable;
  private buffer = Buffer.allocUnsafe(BATCH_BYTES);
  private offset = 0;
  private waiting: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private closed = false;

  constructor() {
    this.stream = new Readable({
      highWaterMark: BATCH_BYTES,
      read: () => {
        const w = this.waiting;
        this.waiting = undefined;
        w?.resolve();
      },
    });
    // Failures are reported through `done`; this keeps a consumer without an error listener from crashing.
    this.stream.on("error", () => {});
    this.stream.on("close", () => {
      this.closed = true;
      const w = this.waiting;
      this.waiting = undefined;
      w?.reject(streamClosed());
    });
  }

  /** The current buffer and the offset where the next n bytes go; n must be at most a batch unless the buffer is empty. */
  async reserve(n: number): Promise<{ buffer: Buffer; at: number }> {
    if (this.offset + n > this.buffer.length) {
      await this.flush();
      if (n > this.buffer.length) this.buffer = Buffer.allocUnsafe(n);
    }
    return { buffer: this.buffer, at: this.offset };
  }

  /** Room left in the current buffer (0: full). */
  get room(): number {
    return this.buffer.length - this.offset;
  }

  advance(n: number): void {
    this.offset += n;
  }

  /** A whole in-memory member: header, content, padding. */
  async member(name: string, data: Buffer): Promise<void> {
    const header = tarHeader(name, data.length, 0o644, Date.now());
    const total = header.length + padded(data.length);
    const { buffer, at } = await this.reserve(total);
    header.copy(buffer, at);
    data.copy(buffer, at + header.length);
    this.advance(header.length + data.length);
    this.pad(data.length);
  }

  /** Zero bytes up to the next 512-byte block after a member's `size` bytes of content. */
  pad(size: number): void {
    const n = padded(size) - size;
    if (n === 0) return;
    this.buffer.fill(0, this.offset, this.offset + n);
    this.offset += n;
  }

  /** Hands the filled part of the buffer to the stream and starts a new one. */
  async flush(): Promise<void> {
    if (this.closed || this.stream.destroyed) throw streamClosed();
    if (this.offset === 0) return;
    const chunk = this.offset === this.buffer.length ? this.buffer : this.buffer.subarray(0, this.offset);
    this.buffer = Buffer.allocUnsafe(BATCH_BYTES);
    this.offset = 0;
    if (this.stream.push(chunk)) return;
    await new Promise<void>((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
  }

  /** The end-of-archive blocks, then the end of the stream. */
  async finish(): Promise<void> {
    const { buffer, at } = await this.reserve(2 * BLOCK);
    buffer.fill(0, at, at + 2 * BLOCK);
    this.advance(2 * BLOCK);
    await this.flush();
    this.stream.push(null);
  }

  fail(error: Error): void {
    this.closed = true;
    this.stream.destroy(error);
  }
}

function padded(size: number): number {
  return size + ((BLOCK - (size % BLOCK)) % BLOCK);
}

/**
 * The header block(s) of a regular file: one ustar block when the path fits its name (100 bytes) or
 * prefix/name (155/100) fields, otherwise a pax extended header with the path first. A size beyond
 * the 11-digit octal field also goes in the pax header.
 */
function tarHeader(path: string, size: number, mode: number, mtimeMs: number): Buffer {
  const name = Buffer.from(path, "utf8");
  const mtime = Math.min(Math.max(0, Math.floor(mtimeMs / 1000)), MAX_OCTAL_11);
  let split = ustarSplit(name);
  const records: string[] = [];
  if (split === undefined) records.push(paxRecord("path", path));
  if (size > MAX_OCTAL_11) records.push(paxRecord("size", String(size)));
  if (records.length === 0) return ustarBlock(split!.prefix, split!.name, size, mode, mtime, "0");
  const pax = Buffer.from(records.join(""), "utf8");
  // The pax header's own name: ASCII, short; readers that do not know pax would create it as a file.
  const paxName = Buffer.from("PaxHeader/" + (path.replace(/[^\x20-\x7e]/g, "_").split("/").pop() ?? "").slice(0, 80), "utf8");
  split ??= { prefix: Buffer.alloc(0), name: name.subarray(0, 100) };
  const out = Buffer.alloc(BLOCK + padded(pax.length) + BLOCK);
  ustarBlock(Buffer.alloc(0), paxName, pax.length, 0o644, mtime, "x").copy(out, 0);
  pax.copy(out, BLOCK);
  ustarBlock(split.prefix, split.name, Math.min(size, MAX_OCTAL_11), mode, mtime, "0").copy(out, BLOCK + padded(pax.length));
  return out;
}

/** `path` as ustar's prefix and name fields, or undefined when it does not fit them. */
function ustarSplit(name: Buffer): { prefix: Buffer; name: Buffer } | undefined {
  if (name.length <= 100) return { prefix: Buffer.alloc(0), name };
  // Split at a slash: the prefix (before it) at most 155 bytes, the name (after it) at most 100.
  for (let i = Math.min(155, name.length - 2); i > 0; i--) {
    if (name[i] !== 0x2f) continue;
    if (name.length - i - 1 > 100) return undefined;
    return { prefix: name.subarray(0, i), name: name.subarray(i + 1) };
  }
  return undefined;
}

/** One pax record, "LEN key=value\n", where LEN counts the whole record including itself. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyLength = Buffer.byteLength(body, "utf8");
  const digits = String(bodyLength).length;
  let length = bodyLength + digits;
  if (String(length).length > digits) length = bodyLength + String(length).length;
  return `${length}${body}`;
}

function ustarBlock(prefix: Buffer, name: Buffer, size: number, mode: number, mtime: number, type: string): Buffer {
  const b = Buffer.alloc(BLOCK);
  name.copy(b, 0, 0, Math.min(name.length, 100));
  b.write(octal(mode & 0o7777, 7), 100, "ascii");
  b.write(octal(0, 7), 108, "ascii"); // uid
  b.write(octal(0, 7), 116, "ascii"); // gid
  b.write(octal(size, 11), 124, "ascii");
  b.write(octal(mtime, 11), 136, "ascii");
  b.write(type, 156, "ascii");
  b.write("ustar\u000000", 257, "ascii");
  b.write(octal(0, 7), 329, "ascii"); // devmajor
  b.write(octal(0, 7), 337, "ascii"); // devminor
  prefix.copy(b, 345, 0, Math.min(prefix.length, 155));
  // The checksum: the sum of all bytes with the checksum field itself counted as eight spaces.
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i]!;
  b.write(sum.toString(8).padStart(6, "0") + "\u0000 ", 148, "ascii");
  return b;
}

/** `value` as `digits` octal digits, zero-padded, NUL-terminated. */
function octal(value: number, digits: number): string {
  return value.toString(8).padStart(digits, "0") + "\u0000";
}

function checkAbort(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
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

async function packFile(out: TarOut, root: string, entry: PackEntry, signal: AbortSignal | undefined): Promise<PackedRead> {
  const handle: FileHandle = await open(join(root, entry.path), OPEN_FLAGS).catch((cause: NodeJS.ErrnoException) => {
    throw cause.code === "ENOENT" || cause.code === "ELOOP" ? changed(entry.path, cause.code === "ENOENT" ? "it was deleted" : "it became a symlink") : cause;
  });
  try {
    const st = await handle.stat();
    if (st.size !== entry.size) throw changed(entry.path, `size ${entry.size} became ${st.size}`);
    const header = tarHeader(entry.path, entry.size, entry.mode, entry.mtimeMs);
    const slot = await out.reserve(header.length);
    header.copy(slot.buffer, slot.at);
    out.advance(header.length);
    const hash = createHash("sha256");
    let remaining = entry.size;
    // Read straight into the tar's buffer. A full buffer is handed on only when more of the file
    // follows, so the file's last bytes stay here until its sha256 matched: a changed file never
    // arrives whole.
    while (remaining > 0) {
      checkAbort(signal);
      const { buffer, at } = await out.reserve(1);
      const want = Math.min(out.room, remaining);
      const { bytesRead } = await handle.read(buffer, at, want, null);
      if (bytesRead === 0) throw changed(entry.path, "it got shorter");
      hash.update(buffer.subarray(at, at + bytesRead));
      out.advance(bytesRead);
      remaining -= bytesRead;
    }
    const sha256 = hash.digest("hex");
    if (entry.sha256 === undefined) {
      // Hashed now, from the bytes sent: they are the file's content if it did not change meanwhile.
      const after = await handle.stat();
      if (after.size !== st.size || after.mtimeMs !== st.mtimeMs) throw changed(entry.path, "it was modified while it was read");
    } else if (sha256 !== entry.sha256) throw changed(entry.path, "its content no longer matches its hash");
    out.pad(entry.size);
    return { sha256, mtimeMs: st.mtimeMs, ino: st.ino };
  } finally {
    await handle.close();
  }
}

/**
 * Packs a small file in one piece: read with synchronous calls (no thread-pool round trips, which
 * dominate for small files) straight into the tar's buffer, after room for its header, and checked
 * against the manifest's size and sha256 before the header is written and the bytes count as
 * written, so a changed file never reaches the stream at all.
 */
async function packSmallFile(out: TarOut, root: string, entry: PackEntry): Promise<PackedRead> {
  const header = tarHeader(entry.path, entry.size, entry.mode, entry.mtimeMs);
  const { buffer, at } = await out.reserve(header.length + padded(entry.size));
  const read = readSmallFile(root, entry, buffer, at + header.length);
  header.copy(buffer, at);
  out.advance(header.length + entry.size);
  out.pad(entry.size);
  return read;
}

function readSmallFile(root: string, entry: PackEntry, data: Buffer, offset: number): PackedRead {
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
    let read = 0;
    while (read < entry.size) {
      const bytesRead = readSync(fd, data, offset + read, entry.size - read, null);
      if (bytesRead === 0) throw changed(entry.path, "it got shorter");
      read += bytesRead;
    }
    const sha256 = createHash("sha256").update(data.subarray(offset, offset + entry.size)).digest("hex");
    if (entry.sha256 === undefined) {
      const after = fstatSync(fd);
      if (after.size !== st.size || after.mtimeMs !== st.mtimeMs) throw changed(entry.path, "it was modified while it was read");
    } else if (sha256 !== entry.sha256) throw changed(entry.path, "its content no longer matches its hash");
    return { sha256, mtimeMs: st.mtimeMs, ino: st.ino };
  } finally {
    closeSync(fd);
  }
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

function streamClosed(cause?: unknown): RunctlError {
  return new RunctlError("TRANSPORT_ERROR", "The sync stream was closed before it was fully sent.", {
    retryable: true,
    cause,
    details: { reason: "stream-closed" },
  });
}
