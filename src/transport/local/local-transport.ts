import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFile, mkdir, open, rename, rm } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import { hostname } from "node:os";
import { dirname } from "node:path";
import { Readable } from "node:stream";
import { RunctlError, abortError } from "../../errors/runctl-error.js";
import { AsyncQueue } from "../../util/async-queue.js";
import { TailBuffer } from "../../util/tail-buffer.js";
import type { Command, ExecHandle, ExecOptions, ExecResult, OutputChunk, Transport } from "../types.js";
import { shellJoin } from "../shell-quote.js";
import { localBaseEnv } from "./machine-env.js";

const DEFAULT_TAIL_BYTES = 65_536;

/**
 * A Transport for this machine, over `child_process` (argv is never passed through a shell).
 * Commands get a minimal environment, not this process's: `PATH`, `HOME`, `USER`, `LOGNAME`,
 * `SHELL`, `LANG`, `LANGUAGE`, `LC_*`, `TZ`, `TERM`, `TMPDIR`, plus `ExecOptions.env`.
 *
 * @example
 * ```ts
 * const t = localTransport();
 * const { exitCode, stdout } = await t.exec(["python3", "--version"]);
 * ```
 */
export function localTransport(): Transport {
  return {
    host: hostname(),
    exec: (command, options) => localExec(command, options ?? {}),
    async putFile(localPath, remotePath, options) {
      if (options?.mode === undefined) {
        await copyLocal(localPath, remotePath, options?.signal);
        return;
      }
      // Created with its mode (a 0600 file is never readable by others, not even for a moment),
      // then renamed into place.
      const tmp = `${remotePath}.runctl-${randomBytes(6).toString("hex")}.part`;
      await mkdir(dirname(remotePath), { recursive: true });
      try {
        const source = await open(localPath, "r").catch((cause: unknown) => {
          throw new RunctlError("NOT_FOUND", `Cannot copy ${localPath} to ${remotePath}: ${(cause as Error).message}`, { cause });
        });
        try {
          // 0o600 & mode at creation (never wider than asked), the exact mode after (the umask may narrow it).
          const target = await open(tmp, "wx", options.mode & 0o600);
          try {
            await pipeline(source.createReadStream({ autoClose: false }), target.createWriteStream({ autoClose: false }), ...(options.signal ? [{ signal: options.signal }] : []));
            await target.chmod(options.mode);
          } finally {
            await target.close();
          }
        } finally {
          await source.close();
        }
        await rename(tmp, remotePath);
      } catch (e) {
        await rm(tmp, { force: true });
        throw e;
      }
    },
    async getFile(remotePath, localPath, options) {
      await copyLocal(remotePath, localPath, options?.signal);
    },
    async close() {},
  };
}

async function copyLocal(from: string, to: string, signal: AbortSignal | undefined): Promise<void> {
  if (signal?.aborted) throw abortError(signal);
  await mkdir(dirname(to), { recursive: true });
  try {
    await copyFile(from, to);
  } catch (cause) {
    throw new RunctlError("NOT_FOUND", `Cannot copy ${from} to ${to}: ${(cause as Error).message}`, { cause });
  }
}

/** Runs one command as a child process; see {@link ExecHandle}. */
export function localExec(command: Command, options: ExecOptions): ExecHandle {
  const queue = new AsyncQueue<OutputChunk>();
  const tailBytes = options.tailBytes ?? DEFAULT_TAIL_BYTES;
  const stdoutTail = new TailBuffer(tailBytes);
  const stderrTail = new TailBuffer(tailBytes);
  const stdoutAll: Buffer[] = [];
  const capture = options.captureStdout ?? true;
  const started = Date.now();

  const argv = "script" in command ? ["sh", "-c", command.script] : [...command];
  const file = argv[0];
  const promise = new Promise<ExecResult>((resolve, reject) => {
    if (file === undefined) {
      reject(new RunctlError("INVALID_ARGUMENT", "exec needs a non-empty argv."));
      return;
    }
    if (options.signal?.aborted) {
      reject(abortError(options.signal));
      return;
    }
    const child = spawn(file, argv.slice(1), {
      cwd: options.cwd,
      // Never this process's whole environment: the client's credentials (AWS_*, tokens) would
      // reach every command and, through the agent, the trainer.
      env: { ...localBaseEnv(), ...options.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    const onAbort = (): void => {
      child.kill("SIGKILL");
    };
    options.signal?.addEventListener("abort", onAbort, { once: true });

    child.stdout.on("data", (data: Buffer) => {
      stdoutTail.push(data);
      if (capture) stdoutAll.push(data);
      queue.push({ stream: "stdout", data });
    });
    child.stderr.on("data", (data: Buffer) => {
      stderrTail.push(data);
      queue.push({ stream: "stderr", data });
    });
    // EPIPE on stdin is normal when the command exits without reading all of it.
    child.stdin.on("error", () => {});
    feedStdin(child.stdin, options.stdin);

    child.on("error", (cause) => {
      options.signal?.removeEventListener("abort", onAbort);
      const err = new RunctlError(
        (cause as NodeJS.ErrnoException).code === "ENOENT" ? "NOT_FOUND" : "TRANSPORT_ERROR",
        `Cannot start ${shellJoin(argv)}: ${cause.message}`,
        { cause },
      );
      queue.end(err);
      reject(err);
    });
    child.on("close", (exitCode, signal) => {
      options.signal?.removeEventListener("abort", onAbort);
      if (options.signal?.aborted) {
        const err = abortError(options.signal);
        queue.end(err);
        reject(err);
        return;
      }
      queue.end();
      resolve({
        exitCode,
        signal,
        durationMs: Date.now() - started,
        stdout: capture ? Buffer.concat(stdoutAll).toString("utf8") : "",
        stdoutTail: stdoutTail.toString(),
        stderrTail: stderrTail.toString(),
      });
    });
  });
  promise.catch(() => {});

  return {
    then: (onFulfilled, onRejected) => promise.then(onFulfilled, onRejected),
    [Symbol.asyncIterator]: () => queue.iterate(),
  };
}

function feedStdin(stdin: NodeJS.WritableStream, input: ExecOptions["stdin"]): void {
  if (input === undefined) {
    stdin.end();
  } else if (typeof input === "string" || input instanceof Uint8Array) {
    stdin.end(input);
  } else {
    (input as Readable).on("error", () => stdin.end()).pipe(stdin);
  }
}
