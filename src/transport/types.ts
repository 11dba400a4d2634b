import type { Readable } from "node:stream";

/**
 * What to run: an argv array (never joined into a shell string unquoted) or a POSIX `sh` script.
 *
 * @example
 * ```ts
 * const a: Command = ["python3", "train.py", "--lr", "0.1"];
 * const b: Command = { script: "nvidia-smi || true" };
 * ```
 */
export type Command =
  | readonly string[]
  | {
      /** A POSIX `sh` script, run as is (the caller is responsible for quoting). */
      readonly script: string;
    };

/** Options of {@link Transport.exec}. */
export interface ExecOptions {
  /** Working directory on the machine. @defaultValue the login directory */
  readonly cwd?: string | undefined;
  /** Extra environment variables (merged over the machine's). @defaultValue `{}` */
  readonly env?: Readonly<Record<string, string>> | undefined;
  /** Data written to the command's stdin, then stdin is closed. @defaultValue stdin closed at once */
  readonly stdin?: string | Uint8Array | Readable | undefined;
  /** Aborting kills the command (or, remotely, closes its channel) and rejects with ABORTED. */
  readonly signal?: AbortSignal | undefined;
  /** Bytes of stdout/stderr kept for {@link ExecResult.stdoutTail}. @defaultValue 65536 */
  readonly tailBytes?: number | undefined;
  /** Keep the whole stdout in {@link ExecResult.stdout} (for small outputs). @defaultValue true */
  readonly captureStdout?: boolean | undefined;
}

/** The settled outcome of a command. A non-zero exit is a result, not an exception. */
export interface ExecResult {
  /** Exit code; null when killed by a signal. */
  readonly exitCode: number | null;
  /** Terminating signal name (e.g. `"SIGKILL"`), or null. */
  readonly signal: string | null;
  /** Wall time from start to exit. */
  readonly durationMs: number;
  /** Whole stdout as UTF-8, when `captureStdout` was on (the default). */
  readonly stdout: string;
  /** Last `tailBytes` of stdout. */
  readonly stdoutTail: string;
  /** Last `tailBytes` of stderr. */
  readonly stderrTail: string;
}

/** One chunk of output, in arrival order. */
export interface OutputChunk {
  /** Which stream the bytes came from. */
  readonly stream: "stdout" | "stderr";
  /** The raw bytes, as received (not split into lines). */
  readonly data: Uint8Array;
}

/**
 * A running command: await it for the {@link ExecResult}, iterate it for output chunks as they arrive.
 * Awaiting rejects only for transport failures (TRANSPORT_ERROR, retryable) or ABORTED;
 * a dropped connection is never reported as a result.
 *
 * @example
 * ```ts
 * const h = transport.exec(["python3", "-u", "x.py"]);
 * for await (const chunk of h) process.stdout.write(chunk.data);
 * const { exitCode } = await h;
 * ```
 */
export interface ExecHandle extends PromiseLike<ExecResult>, AsyncIterable<OutputChunk> {}

/**
 * How runctl talks to a machine. Small and structural: implement it to add a transport.
 * Paths are absolute paths on the machine.
 *
 * @example
 * ```ts
 * const t: Transport = localTransport();
 * const r = await t.exec(["uname", "-a"]);
 * ```
 */
export interface Transport {
  /** Human-readable name of the machine (hostname or address), used in errors. */
  readonly host: string;
  /**
   * Output arrives only when a command ends (SSM): long-lived reads are split into bounded calls.
   * @defaultValue false (output streams while the command runs)
   */
  readonly buffered?: boolean | undefined;
  /**
   * A command's stdin is stored on its way to the machine (SSM stages it in S3), so it leaves a
   * copy: runctl never sends secrets on it, and the machine must use its own credentials.
   * @defaultValue false (stdin is a private byte stream: a pipe, an SSH channel)
   */
  readonly stdinLeavesCopy?: boolean | undefined;
  /** Starts a command. See {@link ExecHandle}. */
  exec(command: Command, options?: ExecOptions): ExecHandle;
  /** Copies a local file to the machine, creating parent folders. */
  putFile(localPath: string, remotePath: string, options?: { readonly signal?: AbortSignal | undefined; readonly mode?: number | undefined }): Promise<void>;
  /** Copies a file from the machine to a local path, creating parent folders. */
  getFile(remotePath: string, localPath: string, options?: { readonly signal?: AbortSignal | undefined }): Promise<void>;
  /** Frees connections. The machine and anything running on it are untouched. */
  close(): Promise<void>;
}
