import { Readable } from "node:stream";
import pRetry from "p-retry";
import type { Client, ClientChannel } from "ssh2";
import { CommandError, RunctlError, abortError } from "../../errors/runctl-error.js";
import type { Command, ExecHandle, ExecOptions, Transport } from "../types.js";
import { RemoteExecHandle } from "./exec-handle.js";
import { buildRemoteCommand, describeCommand } from "./remote-command.js";
import { SessionSlots } from "./session-slots.js";
import { sftpGetFile, sftpPutFile } from "./sftp-transfer.js";
import { displayHost, openSshConnection } from "./ssh-connect.js";
import { SSH_TRANSPORT_DEFAULTS, type SshTransportOptions } from "./ssh-transport-options.js";
import { sourceLogger, type SourceLogger } from "../../util/logger.js";
import { loggedTransport } from "../logged-transport.js";

/**
 * A {@link Transport} over SSH, plus an explicit `connect()` to fail fast on bad settings.
 *
 * @example
 * ```ts
 * const t: SshTransport = sshTransport({ host: "10.0.0.5", username: "me", privateKeyPath: "~/.ssh/id_ed25519" });
 * await t.connect();
 * ```
 */
export interface SshTransport extends Transport {
  /**
   * Opens the connection now (it is otherwise opened by the first call), verifying the host key and
   * the credentials. Resolves at once when connected. Rejects with HOST_KEY_MISMATCH, AUTH_FAILED,
   * HOST_UNREACHABLE (after `connectRetries` retries) or ABORTED.
   */
  connect(options?: { readonly signal?: AbortSignal | undefined }): Promise<void>;
}

const DEFAULT_TAIL_BYTES = 65_536;
/** Size of the slices a large stdin buffer is written in. */
const STDIN_SLICE = 1024 * 1024;

/**
 * Creates an SSH {@link Transport}: commands run over exec channels with streamed output, files move
 * over SFTP, host keys are verified against known_hosts, keepalives detect dead links within about
 * `keepaliveIntervalMs × keepaliveCountMax`, and a dropped connection is reopened (with backoff) by the
 * next call. A command whose connection drops rejects with TRANSPORT_ERROR (retryable); it is never
 * reported as a result.
 *
 * @param options - Host, credentials, known_hosts, keepalive and retry settings. See {@link SshTransportOptions}.
 * @returns The transport; `close()` it when done.
 *
 * @example
 * ```ts
 * const t = sshTransport({ host: "gpu1.example.com", username: "ubuntu", privateKeyPath: "~/.ssh/id_ed25519" });
 * const h = t.exec(["python3", "-u", "train.py"], { cwd: "/home/ubuntu/run" });
 * for await (const c of h) process.stdout.write(c.data);
 * console.log((await h).exitCode);
 * await t.close();
 * ```
 */
export function sshTransport(options: SshTransportOptions): SshTransport {
  const log = sourceLogger(options.logger, "transport");
  return loggedTransport(new SshTransportImpl(options, log), log);
}

class SshTransportImpl implements SshTransport {
  readonly host: string;
  private readonly options: SshTransportOptions;
  private readonly slots: SessionSlots;
  private client: Client | undefined;
  private connecting: Promise<Client> | undefined;
  private closed = false;
  private readonly log: SourceLogger;

  constructor(options: SshTransportOptions, log: SourceLogger) {
    if (typeof options.host !== "string" || options.host === "") throw new RunctlError("INVALID_ARGUMENT", "sshTransport needs a host.");
    const port = options.port ?? SSH_TRANSPORT_DEFAULTS.port;
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RunctlError("INVALID_ARGUMENT", `Invalid SSH port ${String(options.port)}.`);
    this.options = options;
    this.log = log;
    this.host = displayHost(options);
    this.slots = new SessionSlots(options.maxSessions ?? SSH_TRANSPORT_DEFAULTS.maxSessions);
  }

  async connect(opts: { readonly signal?: AbortSignal | undefined } = {}): Promise<void> {
    await this.getClient(opts.signal);
  }

  /** The live connection, opening (or reopening) it with retries when needed. */
  private async getClient(signal: AbortSignal | undefined): Promise<Client> {
    if (this.closed) throw this.closedError();
    if (signal?.aborted) throw abortError(signal);
    if (this.client) return this.client;
    if (!this.connecting) {
      const retries = this.options.connectRetries ?? SSH_TRANSPORT_DEFAULTS.connectRetries;
      // Where and as whom only: keys, passphrases and agent sockets are never logged.
      const target = `${this.options.username ?? "(local user)"}@${this.host}:${this.options.port ?? SSH_TRANSPORT_DEFAULTS.port}`;
      const started = performance.now();
      this.log.debug(`ssh ${target}: connecting`, { host: this.host });
      const attempt = pRetry(() => openSshConnection(this.options), {
        retries,
        minTimeout: 250,
        maxTimeout: 4_000,
        factor: 2,
        randomize: true,
        shouldRetry: ({ error }) => !this.closed && error instanceof RunctlError && error.retryable,
        onFailedAttempt: ({ error, attemptNumber }) => this.log.debug(`ssh ${target}: connect attempt ${attemptNumber} failed: ${error.message}`, { host: this.host }),
      });
      this.connecting = attempt.then(
        (client) => {
          this.connecting = undefined;
          if (this.closed) {
            client.end();
            throw this.closedError();
          }
          this.client = client;
          this.log.debug(`ssh ${target}: connected in ${Math.round(performance.now() - started)} ms`, { host: this.host, durationMs: Math.round(performance.now() - started) });
          client.once("close", () => {
            if (this.client === client) this.client = undefined;
          });
          return client;
        },
        (error: unknown) => {
          this.connecting = undefined;
          throw error;
        },
      );
      this.connecting.catch(() => {});
    }
    const connecting = this.connecting;
    if (!signal) return connecting;
    // The caller's signal abandons its wait; the shared attempt goes on for other callers.
    return new Promise<Client>((resolve, reject) => {
      const onAbort = (): void => reject(abortError(signal));
      signal.addEventListener("abort", onAbort, { once: true });
      connecting.then(
        (c) => {
          signal.removeEventListener("abort", onAbort);
          resolve(c);
        },
        (e: unknown) => {
          signal.removeEventListener("abort", onAbort);
          reject(e);
        },
      );
    });
  }

  private closedError(): RunctlError {
    return new RunctlError("TRANSPORT_ERROR", `The SSH transport to ${this.host} was closed.`, { details: { host: this.host } });
  }

  exec(command: Command, options: ExecOptions = {}): ExecHandle {
    const handle = new RemoteExecHandle(options.tailBytes ?? DEFAULT_TAIL_BYTES, options.captureStdout ?? true);
    let line: string;
    try {
      line = buildRemoteCommand(command, options);
    } catch (e) {
      handle.fail(e);
      return handle;
    }
    void this.run(command, line, options, handle);
    return handle;
  }

  private async run(command: Command, line: string, options: ExecOptions, handle: RemoteExecHandle): Promise<void> {
    const signal = options.signal;
    let release: (() => void) | undefined;
    try {
      release = await this.slots.acquire(signal);
      for (let attempt = 0; ; attempt++) {
        const client = await this.getClient(signal);
        const outcome = await this.runOnChannel(client, command, line, options, handle, attempt === 0);
        if (outcome === "done") break;
        // The connection was dead before the command was sent: drop it; the next round reconnects.
        if (this.client === client) this.client = undefined;
        client.destroy();
      }
    } catch (e) {
      handle.fail(e);
    } finally {
      release?.();
    }
  }

  /**
   * Runs one command on an open connection and settles `handle`, or returns "not-started" without
   * settling it when the connection turned out dead before the command was sent (and `mayRetry`).
   */
  private runOnChannel(client: Client, command: Command, line: string, options: ExecOptions, handle: RemoteExecHandle, mayRetry: boolean): Promise<"done" | "not-started"> {
    const signal = options.signal;
    const described = describeCommand(command);
    return new Promise<"done" | "not-started">((resolveRun) => {
      let channel: ClientChannel | undefined;
      let started = Date.now();
      let exit: { code: number | null; signal: string | null } | undefined;
      let stdinSource: Readable | undefined;
      let finished = false;

      const cleanup = (outcome: "done" | "not-started" = "done"): void => {
        finished = true;
        client.removeListener("close", onClientClose);
        signal?.removeEventListener("abort", onAbort);
        if (stdinSource && channel) stdinSource.unpipe(channel);
        resolveRun(outcome);
      };
      const dropped = (why: string): CommandError =>
        new CommandError(
          { command: described, host: this.host, exitCode: null, signal: null, durationMs: Date.now() - started, ...handle.tails() },
          {
            code: "TRANSPORT_ERROR",
            retryable: true,
            message: `The SSH connection to ${this.host} ${why} while running: ${described}. The command's outcome is unknown (it may still be running, or have died with the host).`,
          },
        );
      const fail = (err: unknown): void => {
        if (finished) return;
        cleanup();
        try {
          channel?.close();
        } catch {
          // connection already gone
        }
        handle.fail(err);
      };
      const onClientClose = (): void => {
        if (finished) return;
        if (exit) {
          succeed();
          return;
        }
        fail(this.closed ? this.closedError() : dropped("dropped"));
      };
      const onAbort = (): void => {
        if (finished) return;
        if (channel) sendSignal(channel, "KILL");
        fail(abortError(signal!));
      };
      const succeed = (): void => {
        if (finished) return;
        cleanup();
        handle.succeed({ exitCode: exit!.code, signal: exit!.signal, durationMs: Date.now() - started });
      };

      client.once("close", onClientClose);
      if (signal) {
        if (signal.aborted) {
          fail(abortError(signal));
          return;
        }
        signal.addEventListener("abort", onAbort, { once: true });
      }

      try {
        client.exec(line, (err, ch) => {
          if (err) {
            fail(
              new RunctlError("TRANSPORT_ERROR", `Cannot open an SSH session on ${this.host}: ${err.message}`, {
                cause: err,
                retryable: true,
                details: { host: this.host },
              }),
            );
            return;
          }
          channel = ch;
          if (finished) {
            // aborted or dropped while opening
            sendSignal(ch, "KILL");
            try {
              ch.close();
            } catch {
              // gone
            }
            return;
          }
          started = Date.now();
          handle.setFlowControl({
            pause: () => {
              ch.pause();
              ch.stderr.pause();
            },
            resume: () => {
              ch.resume();
              ch.stderr.resume();
            },
          });
          ch.on("data", (d: Buffer) => handle.push("stdout", d));
          ch.stderr.on("data", (d: Buffer) => handle.push("stderr", d));
          ch.on("error", () => {});
          ch.stderr.on("error", () => {});
          ch.on("exit", (code: number | null, sig?: string) => {
            exit = {
              code: typeof code === "number" ? code : null,
              signal: typeof sig === "string" && sig !== "" ? (sig.startsWith("SIG") ? sig : `SIG${sig}`) : null,
            };
          });
          ch.on("close", () => {
            if (finished) return;
            // A close without an exit status means the session died with the connection or the host.
            if (exit && (exit.code !== null || exit.signal !== null)) succeed();
            else fail(this.closed ? this.closedError() : dropped("dropped"));
          });
          feedStdin(ch, options.stdin, (e) =>
            fail(
              new RunctlError("INVALID_ARGUMENT", `The stdin stream for ${described} on ${this.host} failed: ${e.message}`, {
                cause: e,
                details: { host: this.host },
              }),
            ),
          );
          if (options.stdin !== undefined && typeof options.stdin === "object" && !(options.stdin instanceof Uint8Array)) stdinSource = options.stdin;
        });
      } catch (cause) {
        // ssh2 throws "Not connected" synchronously: nothing reached the host, so it is safe to retry.
        if (mayRetry && !this.closed) cleanup("not-started");
        else fail(dropped(`was not usable (${(cause as Error).message})`));
      }
    });
  }

  async putFile(localPath: string, remotePath: string, options: { readonly signal?: AbortSignal | undefined; readonly mode?: number | undefined } = {}): Promise<void> {
    await this.withSession(options.signal, (client) =>
      sftpPutFile(client, localPath, remotePath, {
        where: this.host,
        signal: options.signal,
        mode: options.mode,
      }),
    );
  }

  async getFile(remotePath: string, localPath: string, options: { readonly signal?: AbortSignal | undefined } = {}): Promise<void> {
    await this.withSession(options.signal, (client) => sftpGetFile(client, remotePath, localPath, { where: this.host, signal: options.signal }));
  }

  private async withSession<T>(signal: AbortSignal | undefined, work: (client: Client) => Promise<T>): Promise<T> {
    const release = await this.slots.acquire(signal);
    try {
      return await work(await this.getClient(signal));
    } finally {
      release();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.slots.rejectAll(this.closedError());
    const pending = this.connecting;
    if (pending) await pending.then((c) => c.end()).catch(() => {});
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        client.destroy();
        resolve();
      }, 2_000);
      client.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
      try {
        client.end();
      } catch {
        clearTimeout(timer);
        resolve();
      }
    });
  }
}

/**
 * Sends a signal request for the session's process group (OpenSSH delivers it with killpg). ssh2's public
 * `signal()` refuses once stdin was closed (EOF sent), although SSH allows channel requests until the
 * channel closes, so the request goes through ssh2's protocol object then.
 */
function sendSignal(channel: ClientChannel, name: string): void {
  const internal = channel as unknown as {
    outgoing?: { id?: number; state?: string };
    _client?: { _protocol?: { signal?: (id: number, signal: string) => void } };
  };
  try {
    const state = internal.outgoing?.state;
    if (state === "open" && channel.writable) {
      channel.signal(name);
    } else if ((state === "open" || state === "eof") && typeof internal.outgoing?.id === "number") {
      internal._client?._protocol?.signal?.(internal.outgoing.id, name);
    }
  } catch {
    // the connection is gone, or the server refuses signals: closing the channel is all that is left
  }
}

/** Writes stdin into the channel and sends EOF; stream sources are piped with backpressure. */
function feedStdin(channel: ClientChannel, input: ExecOptions["stdin"], onError: (e: Error) => void): void {
  if (input === undefined) {
    channel.end();
  } else if (typeof input === "string" || input instanceof Uint8Array) {
    const data = typeof input === "string" ? Buffer.from(input) : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    if (data.length <= STDIN_SLICE) {
      channel.end(data);
      return;
    }
    // One huge write is slow in ssh2 (about half the speed of streamed slices); stream it in slices.
    const slices = function* (): Generator<Buffer> {
      for (let off = 0; off < data.length; off += STDIN_SLICE) yield data.subarray(off, off + STDIN_SLICE);
    };
    Readable.from(slices()).pipe(channel);
  } else {
    input.once("error", (e: Error) => onError(e));
    input.pipe(channel);
  }
}
