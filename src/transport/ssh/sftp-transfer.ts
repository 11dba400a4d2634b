import { randomBytes } from "node:crypto";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, posix } from "node:path";
import type { Client, SFTPWrapper, Stats } from "ssh2";
import { RunctlError, abortError } from "../../errors/runctl-error.js";

/**
 * Facts about one transfer, for messages and races.
 *
 * @example
 * ```ts
 * const ctx: TransferContext = { where: "gpu1", signal: controller.signal };
 * ```
 */
export interface TransferContext {
  /** Human-readable host, for messages (no default). */
  readonly where: string;
  /** Aborts the transfer (the SFTP session is closed) with ABORTED. @defaultValue none */
  readonly signal?: AbortSignal | undefined;
}

const SFTP_NO_SUCH_FILE = 2;
const SFTP_PERMISSION_DENIED = 3;

function sftpError(err: Error & { code?: unknown }, what: string, where: string): RunctlError {
  if (err.code === SFTP_NO_SUCH_FILE) return new RunctlError("NOT_FOUND", `${what} on ${where}: no such file or folder.`, { cause: err, details: { host: where } });
  if (err.code === SFTP_PERMISSION_DENIED) return new RunctlError("TRANSPORT_ERROR", `${what} on ${where}: permission denied.`, { cause: err, details: { host: where } });
  return new RunctlError("TRANSPORT_ERROR", `${what} on ${where} failed: ${err.message}`, { cause: err, details: { host: where } });
}

function cb<T = void>(fn: (done: (err: Error | null | undefined, value?: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    try {
      fn((err, value) => (err ? reject(err) : resolve(value as T)));
    } catch (e) {
      reject(e);
    }
  });
}

/**
 * Opens an SFTP session on `client`, runs `work` with it, and closes it. The whole operation is raced
 * against the connection closing (SFTP requests never settle on a dead connection: that rejects with
 * TRANSPORT_ERROR, retryable) and against `signal` (ABORTED).
 *
 * @example
 * ```ts
 * const size = await withSftp(client, { where: "gpu1" }, "stat", async (sftp) => (await statRemote(sftp, "/x")).size);
 * ```
 */
export function withSftp<T>(client: Client, ctx: TransferContext, what: string, work: (sftp: SFTPWrapper) => Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let sftp: SFTPWrapper | undefined;
    let settled = false;
    const finish = (err: unknown, value?: T): void => {
      if (settled) return;
      settled = true;
      client.removeListener("close", onClose);
      ctx.signal?.removeEventListener("abort", onAbort);
      try {
        sftp?.end();
      } catch {
        // already closed
      }
      if (err !== undefined) reject(err);
      else resolve(value as T);
    };
    const onClose = (): void =>
      finish(new RunctlError("TRANSPORT_ERROR", `The connection to ${ctx.where} dropped during ${what}.`, { retryable: true, details: { host: ctx.where } }));
    const onAbort = (): void => finish(abortError(ctx.signal!));
    if (ctx.signal?.aborted) {
      finish(abortError(ctx.signal));
      return;
    }
    client.once("close", onClose);
    ctx.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      client.sftp((err, s) => {
        if (err) {
          finish(new RunctlError("TRANSPORT_ERROR", `Cannot open an SFTP session on ${ctx.where}: ${err.message}`, { cause: err, retryable: true, details: { host: ctx.where } }));
          return;
        }
        sftp = s;
        s.on("error", () => {});
        if (settled) {
          s.end();
          return;
        }
        work(s).then(
          (v) => finish(undefined, v),
          (e: unknown) => finish(e),
        );
      });
    } catch (cause) {
      finish(new RunctlError("TRANSPORT_ERROR", `The connection to ${ctx.where} is not usable: ${(cause as Error).message}`, { cause, retryable: true, details: { host: ctx.where } }));
    }
  });
}

async function statRemote(sftp: SFTPWrapper, path: string): Promise<Stats | undefined> {
  try {
    return await cb<Stats>((done) => sftp.stat(path, done));
  } catch (e) {
    if ((e as { code?: unknown }).code === SFTP_NO_SUCH_FILE) return undefined;
    throw e;
  }
}

/**
 * Creates a remote folder and its parents (like `mkdir -p`) over SFTP.
 *
 * @example
 * ```ts
 * await withSftp(client, { where: "gpu1" }, "mkdir", (sftp) => sftpMkdirp(sftp, "/home/me/a/b"));
 * ```
 */
export async function sftpMkdirp(sftp: SFTPWrapper, dir: string): Promise<void> {
  const target = posix.normalize(dir);
  if (target === "/" || target === ".") return;
  const st = await statRemote(sftp, target);
  if (st) {
    if (!st.isDirectory()) throw Object.assign(new Error(`${target} exists and is not a folder`), { code: 4 });
    return;
  }
  await sftpMkdirp(sftp, posix.dirname(target));
  try {
    await cb((done) => sftp.mkdir(target, done));
  } catch (e) {
    const again = await statRemote(sftp, target);
    if (!again?.isDirectory()) throw e;
  }
}

function tempName(path: string): string {
  return posix.join(posix.dirname(path), `.${posix.basename(path)}.runctl-${randomBytes(6).toString("hex")}.part`);
}

/**
 * Uploads a local file over SFTP: parent folders created, written to a temporary name, given `mode`,
 * then renamed into place (so readers never see a half-written file).
 *
 * @example
 * ```ts
 * await sftpPutFile(client, "./spec.json", "/home/me/.runctl/runs/r1/spec.json", { where: "gpu1" });
 * ```
 */
export async function sftpPutFile(client: Client, localPath: string, remotePath: string, ctx: TransferContext & { readonly mode?: number | undefined }): Promise<void> {
  try {
    const st = await stat(localPath);
    if (!st.isFile()) throw new Error("not a regular file");
  } catch (cause) {
    throw new RunctlError("NOT_FOUND", `Cannot upload ${localPath}: ${(cause as Error).message}`, { cause });
  }
  await withSftp(client, ctx, `the upload of ${basename(localPath)} to ${remotePath}`, async (sftp) => {
    const tmp = tempName(remotePath);
    try {
      await sftpMkdirp(sftp, posix.dirname(remotePath));
      if (ctx.mode !== undefined) {
        // Created private before a byte is written (fastPut alone creates it with the remote umask).
        const handle = await cb<Buffer>((done) => sftp.open(tmp, "wx", { mode: ctx.mode! & 0o600 }, done));
        await cb((done) => sftp.close(handle, done));
      }
      await cb((done) => sftp.fastPut(localPath, tmp, { concurrency: 32, chunkSize: 65_536 }, done));
      if (ctx.mode !== undefined) await cb((done) => sftp.chmod(tmp, ctx.mode!, done));
      try {
        await cb((done) => sftp.ext_openssh_rename(tmp, remotePath, done));
      } catch {
        // No posix-rename extension: plain rename refuses an existing target.
        await cb((done) => sftp.unlink(remotePath, done)).catch(() => {});
        await cb((done) => sftp.rename(tmp, remotePath, done));
      }
    } catch (e) {
      sftp.unlink(tmp, () => {});
      throw e instanceof RunctlError ? e : sftpError(e as Error, `Uploading ${localPath} to ${remotePath}`, ctx.where);
    }
  });
}

/**
 * Downloads a remote file over SFTP into a local path (parent folders created, written to a temporary
 * name and renamed into place).
 *
 * @example
 * ```ts
 * await sftpGetFile(client, "/home/me/out/model.pt", "./model.pt", { where: "gpu1" });
 * ```
 */
export async function sftpGetFile(client: Client, remotePath: string, localPath: string, ctx: TransferContext): Promise<void> {
  await mkdir(dirname(localPath), { recursive: true });
  const tmp = `${localPath}.runctl-${randomBytes(6).toString("hex")}.part`;
  try {
    await withSftp(client, ctx, `the download of ${remotePath}`, async (sftp) => {
      try {
        const st = await statRemote(sftp, remotePath);
        if (!st) throw Object.assign(new Error("no such file"), { code: SFTP_NO_SUCH_FILE });
        if (!st.isFile()) throw new Error("not a regular file");
        await cb((done) => sftp.fastGet(remotePath, tmp, { concurrency: 32, chunkSize: 65_536 }, done));
      } catch (e) {
        throw e instanceof RunctlError ? e : sftpError(e as Error, `Downloading ${remotePath}`, ctx.where);
      }
    });
    await rename(tmp, localPath);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}
