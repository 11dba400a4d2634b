import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, posix } from "node:path";
import { pipeline } from "node:stream/promises";
import { DescribeInstanceInformationCommand, SSMClient, SendCommandCommand, type GetCommandInvocationCommandOutput } from "@aws-sdk/client-ssm";
import { isThrottlingError } from "../../aws/aws-errors.js";
import { AWS_SDK_MAX_ATTEMPTS } from "../../aws/aws-call.js";
import { CommandError, RunctlError, abortError, isRunctlError, throwIfAborted } from "../../errors/runctl-error.js";
import { RemoteExecHandle } from "../ssh/exec-handle.js";
import { describeCommand } from "../ssh/remote-command.js";
import type { Command, ExecHandle, ExecOptions, ExecResult, Transport } from "../types.js";
import { callSsm, ssmCallError } from "./ssm-call.js";
import { sleepMs } from "../../aws/aws-poll.js";
import { cancelInvocation, waitForInvocation } from "./ssm-invocation.js";
import { deliverOutput } from "./ssm-output.js";
import {
  NO_SUCH_FILE_EXIT,
  STAGING_FAILED_EXIT,
  STAGING_FAILED_MARK,
  TOO_LARGE_EXIT,
  execScript,
  getFileScript,
  inlineGetFileLine,
  putFileLine,
  ssmCommands,
  ssmComment,
  userCommand,
} from "./ssm-script.js";
import { localOwner } from "../../util/owner.js";
import { SsmStaging } from "./ssm-staging.js";
import { SSM_TRANSPORT_DEFAULTS, resolveSsmOptions, type ResolvedSsmOptions, type SsmTransportOptions } from "./ssm-transport-options.js";

/**
 * A {@link Transport} over AWS Systems Manager Run Command, plus a readiness check.
 *
 * @example
 * ```ts
 * const t: SsmTransport = ssmTransport({ instanceId: "i-0123456789abcdef0", staging: s3("s3://bucket/runctl") });
 * await t.ready({ timeoutMs: 300_000 });
 * ```
 */
export interface SsmTransport extends Transport {
  /** Always true: SSM returns a command's output only when it ends. */
  readonly buffered: true;
  /** Always true: stdin is staged in S3, so runctl never sends secrets through it. */
  readonly stdinLeavesCopy: true;
  /** The instance commands run on. */
  readonly instanceId: string;
  /**
   * Resolves once the instance really runs commands: its SSM agent reports `PingStatus: Online`
   * (DescribeInstanceInformation) and then a round trip (`echo ready`, as the configured user)
   * succeeded. A command SSM accepted but did not finish never counts. Rejects with
   * MACHINE_NOT_READY (retryable, saying what was last seen) after `timeoutMs`, ABORTED, or
   * CLOUD_ERROR for a permanent AWS error (such as AccessDenied).
   *
   * @defaultValue timeoutMs = 600_000
   */
  ready(options?: { readonly signal?: AbortSignal | undefined; readonly timeoutMs?: number | undefined }): Promise<void>;
}

const DEFAULT_TAIL_BYTES = 65_536;
/** Extra time over SSM's own delivery and execution timeouts before the client stops waiting. */
const WAIT_SLACK_MS = 120_000;

/**
 * Creates an SSM {@link Transport}: each exec is one `AWS-RunShellScript` SendCommand, polled with
 * GetCommandInvocation (backoff from `pollMs` to `maxPollMs`; throttling retried by the AWS layer's
 * one retry policy, the SDK client itself sending once) until it ends. Output arrives when the command ends (`buffered`), so
 * the engine follows runs in bounded calls. Arguments, `cwd` and `env` are quoted into the script,
 * which travels base64-encoded so SSM's `{{ }}` parameter interpolation never touches it. Commands
 * run as `user` (default `ubuntu`, via `sudo -n -u`).
 *
 * With `staging` (an S3 storage the instance profile can read and write): stdin is uploaded and
 * streamed into the command by the machine's `aws` CLI (`aws s3 cp URI - | command`); `putFile` and
 * `getFile` go through the bucket; output beyond SSM's inline limits (24,000/8,000 characters) is
 * read whole from the bucket; every staged object is deleted after use and `close()` removes the
 * transport's staging folder. Nothing secret ever goes into an SSM command.
 *
 * Errors: MACHINE_NOT_READY (retryable) when the instance is not managed by SSM or its agent is
 * offline; TRANSPORT_ERROR (retryable) when throttling outlasts the retries; UNSUPPORTED for stdin
 * (or big files) without staging; ABORTED after an abort, once SSM was asked to cancel the command.
 *
 * @param options - Instance, client, staging and timing. See {@link SsmTransportOptions}.
 * @returns The transport; `close()` it when done.
 * @example
 * ```ts
 * const t = ssmTransport({ instanceId: "i-0123456789abcdef0", region: "us-east-1", staging: s3("s3://ml-bucket/runctl"), runId });
 * await t.ready();
 * const { exitCode, stdout } = await t.exec(["nvidia-smi", "-L"]);
 * await t.putFile("./config.json", "/home/ubuntu/config.json", { mode: 0o600 });
 * await t.close();
 * ```
 */
export function ssmTransport(options: SsmTransportOptions): SsmTransport {
  return new SsmTransportImpl(options);
}

/** What a finished script reported. */
interface ScriptOutcome {
  readonly exitCode: number;
  readonly durationMs: number;
}

class SsmTransportImpl implements SsmTransport {
  readonly host: string;
  readonly buffered = true as const;
  /** Stdin is staged in S3 (or refused without staging): never a channel for secrets. */
  readonly stdinLeavesCopy = true as const;
  readonly instanceId: string;
  private readonly o: ResolvedSsmOptions;
  private readonly client: SSMClient;
  private readonly staging: SsmStaging | undefined;
  private closed = false;

  constructor(options: SsmTransportOptions) {
    this.o = resolveSsmOptions(options);
    this.host = this.o.host;
    this.instanceId = this.o.instanceId;
    this.client = options.client ?? new SSMClient({ ...(options.region ? { region: options.region } : {}), maxAttempts: AWS_SDK_MAX_ATTEMPTS });
    this.staging = options.staging
      ? new SsmStaging(options.staging, { scope: this.o.scope, runId: this.o.runId, owner: options.owner ?? localOwner(), ttlMs: this.o.stagingTtlMs })
      : undefined;
  }

  private closedError(): RunctlError {
    return new RunctlError("TRANSPORT_ERROR", `The SSM transport to ${this.host} was closed.`, { details: { host: this.host } });
  }

  exec(command: Command, options: ExecOptions = {}): ExecHandle {
    const handle = new RemoteExecHandle(options.tailBytes ?? DEFAULT_TAIL_BYTES, options.captureStdout ?? true);
    let line: string;
    try {
      if (this.closed) throw this.closedError();
      line = userCommand(command, options);
      if (options.stdin !== undefined && !this.staging) {
        throw new RunctlError(
          "UNSUPPORTED",
          `SSM has no stdin: to send input to ${describeCommand(command)} on ${this.host}, pass \`staging\` (an S3 storage the instance can read, e.g. s3("s3://bucket/prefix")) to ssmTransport().`,
          { details: { host: this.host } },
        );
      }
    } catch (e) {
      handle.fail(e);
      return handle;
    }
    void this.runExec(command, line, options, handle);
    return handle;
  }

  private async runExec(command: Command, line: string, options: ExecOptions, handle: RemoteExecHandle): Promise<void> {
    const signal = options.signal;
    const staged: string[] = [];
    let settle: () => void;
    try {
      throwIfAborted(signal);
      let stdin: { descriptor: SsmStaging["descriptor"]; uri: string } | undefined;
      if (options.stdin !== undefined && this.staging) {
        // Streamed up (bounded memory); the machine streams it down into the command.
        const key = await this.staging.stage(".stdin", options.stdin, signal);
        staged.push(key);
        stdin = { descriptor: this.staging.descriptor, uri: this.staging.s3Uri(key) };
      }
      const described = describeCommand(command);
      const outcome = await this.runScript(execScript(line, this.o.user, stdin), described, handle, signal);
      if (stdin && outcome.exitCode === STAGING_FAILED_EXIT && handle.tails().stderrTail.includes(STAGING_FAILED_MARK)) {
        throw this.commandFailure(described, outcome, handle, "TRANSPORT_ERROR", `The machine could not fetch the stdin of ${described} staged in ${stdin.uri}.`);
      }
      settle = () => handle.succeed({ exitCode: outcome.exitCode, signal: null, durationMs: outcome.durationMs });
    } catch (e) {
      settle = () => handle.fail(e);
    }
    // Settled only once the staged input is gone, so nothing is left when the caller moves on.
    await this.staging?.delete(staged);
    settle();
  }

  private commandFailure(described: string, outcome: { exitCode: number | null; durationMs: number }, handle: RemoteExecHandle, code: "TRANSPORT_ERROR" | "NOT_FOUND" | "UNSUPPORTED", message: string, retryable = false): CommandError {
    const tails = handle.tails();
    const tail = tails.stderrTail.trim().split("\n").slice(-5).join("\n");
    return new CommandError(
      { command: described, host: this.host, exitCode: outcome.exitCode, signal: null, durationMs: outcome.durationMs, ...tails },
      { code, retryable, message: tail ? `${message}\n${tail}` : message },
    );
  }

  /**
   * Sends a root-level script, waits for it to end and pushes its output into `handle` (without
   * settling it). Cancels the command and rejects with ABORTED when `signal` fires.
   */
  private async runScript(script: string, described: string, handle: RemoteExecHandle, signal: AbortSignal | undefined): Promise<ScriptOutcome> {
    if (this.closed) throw this.closedError();
    const staging = this.staging;
    // SSM writes output objects into the staging folder: the marker must be there first.
    if (staging) await staging.ensureMarker(signal);
    const started = Date.now();
    const commandId = await this.send(script, described, signal);
    try {
      let invocation: GetCommandInvocationCommandOutput;
      try {
        invocation = await waitForInvocation({
          client: this.client,
          commandId,
          instanceId: this.instanceId,
          host: this.host,
          pollMs: this.o.pollMs,
          maxPollMs: this.o.maxPollMs,
          retries: this.o.throttleRetries,
          timeoutMs: this.o.deliveryTimeoutMs + this.o.commandTimeoutMs + WAIT_SLACK_MS,
          signal,
        });
      } catch (err) {
        if (signal?.aborted) {
          await cancelInvocation(this.client, commandId, this.instanceId, this.host);
          throw abortError(signal);
        }
        throw err;
      }
      return await this.conclude(invocation, commandId, described, handle, started, signal);
    } finally {
      if (staging) {
        await staging.delete([staging.outputKey(commandId, this.instanceId, "stdout"), staging.outputKey(commandId, this.instanceId, "stderr")]);
      }
    }
  }

  /** SendCommand, retrying only throttling (a command must never run twice). */
  private async send(script: string, described: string, signal: AbortSignal | undefined): Promise<string> {
    const staging = this.staging;
    try {
      const out = await callSsm(
        "SendCommand",
        (s) =>
          this.client.send(
            new SendCommandCommand({
              DocumentName: "AWS-RunShellScript",
              InstanceIds: [this.instanceId],
              Comment: ssmComment(described),
              TimeoutSeconds: Math.ceil(this.o.deliveryTimeoutMs / 1000),
              Parameters: { commands: ssmCommands(script), executionTimeout: [String(Math.ceil(this.o.commandTimeoutMs / 1000))] },
              ...(staging
                ? {
                    OutputS3BucketName: staging.descriptor.bucket,
                    OutputS3KeyPrefix: staging.outputKeyPrefix,
                    ...(staging.descriptor.region ? { OutputS3Region: staging.descriptor.region } : {}),
                  }
                : {}),
            }),
            s ? { abortSignal: s } : {},
          ),
        { host: this.host, retries: this.o.throttleRetries, signal, retryWhen: isThrottlingError },
      );
      const id = out.Command?.CommandId;
      if (!id) throw new RunctlError("TRANSPORT_ERROR", `SSM SendCommand for ${this.host} returned no command id.`, { retryable: true, details: { host: this.host } });
      return id;
    } catch (err) {
      throw ssmCallError(err, "SendCommand", this.instanceId);
    }
  }

  /** Turns a final invocation into an exit code (output pushed into the handle), or the right error. */
  private async conclude(invocation: GetCommandInvocationCommandOutput, commandId: string, described: string, handle: RemoteExecHandle, started: number, signal: AbortSignal | undefined): Promise<ScriptOutcome> {
    const status = invocation.Status ?? "unknown";
    const details = (invocation.StatusDetails ?? "").replace(/\s+/g, "").toLowerCase();
    const code = invocation.ResponseCode;
    await deliverOutput(handle, { invocation, commandId, instanceId: this.instanceId, staging: this.staging, signal });
    const durationMs = Date.now() - started;
    const facts = { exitCode: typeof code === "number" && code >= 0 ? code : null, durationMs };
    if ((status === "Success" || status === "Failed") && typeof code === "number" && code >= 0 && details !== "undeliverable") return { exitCode: code, durationMs };
    if (details === "undeliverable" || details === "deliverytimedout") {
      throw new RunctlError("MACHINE_NOT_READY", `SSM could not deliver ${described} to ${this.host} (${invocation.StatusDetails}): its SSM agent is not answering.`, {
        retryable: true,
        details: { host: this.host, commandId, status, statusDetails: invocation.StatusDetails },
      });
    }
    if (status === "TimedOut") {
      throw this.commandFailure(described, facts, handle, "TRANSPORT_ERROR", `${described} on ${this.host} ran longer than commandTimeoutMs (${this.o.commandTimeoutMs} ms) and was stopped by SSM.`);
    }
    if (status === "Cancelled") {
      if (signal?.aborted) throw abortError(signal);
      throw this.commandFailure(described, facts, handle, "TRANSPORT_ERROR", `${described} on ${this.host} was cancelled outside runctl (SSM command ${commandId}).`);
    }
    throw this.commandFailure(described, facts, handle, "TRANSPORT_ERROR", `SSM could not run ${described} on ${this.host}: ${status} (${invocation.StatusDetails ?? "no details"}).`, true);
  }

  async putFile(localPath: string, remotePath: string, options: { readonly signal?: AbortSignal | undefined; readonly mode?: number | undefined } = {}): Promise<void> {
    if (this.closed) throw this.closedError();
    throwIfAborted(options.signal);
    checkRemotePath(remotePath);
    let size: number;
    try {
      const st = await stat(localPath);
      if (!st.isFile()) throw new Error("not a regular file");
      size = st.size;
    } catch (cause) {
      throw new RunctlError("NOT_FOUND", `Cannot upload ${localPath}: ${(cause as Error).message}`, { cause });
    }
    const temp = `.${posix.basename(remotePath)}.runctl-${randomBytes(6).toString("hex")}.part`;
    let line: string;
    let stdin: ExecOptions["stdin"];
    if (this.staging) {
      line = putFileLine(remotePath, temp, options.mode);
      stdin = createReadStream(localPath);
    } else {
      if (size > SSM_TRANSPORT_DEFAULTS.inlinePutBytes) {
        throw new RunctlError(
          "UNSUPPORTED",
          `Cannot upload ${localPath} (${size} bytes) to ${this.host} over SSM without staging: files over ${SSM_TRANSPORT_DEFAULTS.inlinePutBytes} bytes need \`staging\` (an S3 storage) in ssmTransport().`,
          { details: { host: this.host, size } },
        );
      }
      line = putFileLine(remotePath, temp, options.mode, (await readFile(localPath)).toString("base64"));
    }
    const result = await this.exec({ script: line }, { ...(stdin ? { stdin } : {}), signal: options.signal, captureStdout: false, tailBytes: 4096 });
    if (result.exitCode !== 0) {
      throw new CommandError(
        { command: `upload ${basename(localPath)} to ${remotePath}`, host: this.host, exitCode: result.exitCode, signal: null, durationMs: result.durationMs, stdoutTail: result.stdoutTail, stderrTail: result.stderrTail },
        { code: "TRANSPORT_ERROR", message: `Uploading ${localPath} to ${remotePath} on ${this.host} failed (exit ${result.exitCode}): ${result.stderrTail.trim()}` },
      );
    }
  }

  async getFile(remotePath: string, localPath: string, options: { readonly signal?: AbortSignal | undefined } = {}): Promise<void> {
    if (this.closed) throw this.closedError();
    const signal = options.signal;
    throwIfAborted(signal);
    checkRemotePath(remotePath);
    await mkdir(dirname(localPath), { recursive: true });
    const tmp = `${localPath}.runctl-${randomBytes(6).toString("hex")}.part`;
    const what = `download ${remotePath}`;
    try {
      if (this.staging) {
        const staging = this.staging;
        await staging.ensureMarker(signal);
        const key = staging.newKey(".get");
        try {
          const handle = new RemoteExecHandle(4096, false);
          const outcome = await this.runScript(getFileScript(remotePath, this.o.user, { descriptor: staging.descriptor, uri: staging.s3Uri(key) }), what, handle, signal);
          this.checkTransfer(outcome, what, remotePath, handle);
          await pipeline(await staging.storage.get(key, signal ? { signal } : {}), createWriteStream(tmp), signal ? { signal } : {});
        } finally {
          await staging.delete([key]);
        }
      } else {
        const result = await this.exec({ script: inlineGetFileLine(remotePath, SSM_TRANSPORT_DEFAULTS.inlineGetBytes) }, { signal, tailBytes: 4096 });
        if (result.exitCode === TOO_LARGE_EXIT) {
          throw new RunctlError(
            "UNSUPPORTED",
            `Cannot download ${remotePath} from ${this.host} over SSM without staging: files over ${SSM_TRANSPORT_DEFAULTS.inlineGetBytes} bytes need \`staging\` (an S3 storage) in ssmTransport().`,
            { details: { host: this.host } },
          );
        }
        this.checkTransfer(result, what, remotePath, undefined);
        await writeFile(tmp, Buffer.from(result.stdout.replace(/\s+/g, ""), "base64"));
      }
      await rename(tmp, localPath);
    } catch (e) {
      await rm(tmp, { force: true });
      if (signal?.aborted && !(isRunctlError(e) && e.code === "ABORTED")) throw abortError(signal);
      throw e;
    }
  }

  /** Throws NOT_FOUND or TRANSPORT_ERROR for a file transfer script that did not exit 0. */
  private checkTransfer(outcome: ScriptOutcome | ExecResult, what: string, remotePath: string, handle: RemoteExecHandle | undefined): void {
    if (outcome.exitCode === 0) return;
    const stderrTail = handle ? handle.tails().stderrTail : "stderrTail" in outcome ? outcome.stderrTail : "";
    const failure = { command: what, host: this.host, exitCode: outcome.exitCode, signal: null, durationMs: outcome.durationMs, stdoutTail: "", stderrTail };
    if (outcome.exitCode === NO_SUCH_FILE_EXIT) {
      throw new CommandError(failure, { code: "NOT_FOUND", message: `Downloading ${remotePath} on ${this.host}: no such file (or not a regular file).` });
    }
    throw new CommandError(failure, { code: "TRANSPORT_ERROR", message: `Downloading ${remotePath} from ${this.host} failed (exit ${outcome.exitCode}): ${stderrTail.trim()}` });
  }

  async ready(options: { readonly signal?: AbortSignal | undefined; readonly timeoutMs?: number | undefined } = {}): Promise<void> {
    const signal = options.signal;
    const timeoutMs = options.timeoutMs ?? 600_000;
    const deadline = Date.now() + timeoutMs;
    let seen = "no answer from SSM yet";
    let delay = Math.max(100, this.o.pollMs);
    for (;;) {
      throwIfAborted(signal);
      if (this.closed) throw this.closedError();
      try {
        const info = await callSsm(
          "DescribeInstanceInformation",
          (s) => this.client.send(new DescribeInstanceInformationCommand({ Filters: [{ Key: "InstanceIds", Values: [this.instanceId] }] }), s ? { abortSignal: s } : {}),
          { host: this.host, retries: this.o.throttleRetries, signal },
        ).catch((err: unknown) => {
          throw ssmCallError(err, "DescribeInstanceInformation", this.instanceId);
        });
        const ping = info.InstanceInformationList?.find((i) => i.InstanceId === this.instanceId)?.PingStatus;
        if (ping !== "Online") {
          seen = ping ? `its SSM agent's PingStatus was ${ping}` : "it was not registered with SSM (no SSM agent online, or no instance profile with AmazonSSMManagedInstanceCore)";
        } else {
          // Online is the agent's last heartbeat; only a finished command proves it runs ours.
          const attempt = AbortSignal.any([...(signal ? [signal] : []), AbortSignal.timeout(Math.max(1, deadline - Date.now()))]);
          try {
            const r = await this.exec(["echo", "ready"], { signal: attempt, tailBytes: 4096 });
            if (r.exitCode === 0 && r.stdout.trim() === "ready") return;
            seen = `its SSM agent was Online but \`echo ready\` exited ${String(r.exitCode)}${r.stderrTail.trim() ? `: ${r.stderrTail.trim().slice(-300)}` : ""}`;
          } catch (err) {
            if (signal?.aborted) throw abortError(signal);
            if (isRunctlError(err) && err.code === "ABORTED") seen = "its SSM agent was Online but `echo ready` did not finish";
            else throw err;
          }
        }
      } catch (err) {
        if (signal?.aborted) throw abortError(signal);
        if (!isRunctlError(err) || !err.retryable) throw err;
        seen = err.message;
      }
      if (Date.now() + delay >= deadline) {
        throw new RunctlError("MACHINE_NOT_READY", `${this.host} was not ready for SSM commands after ${Math.round(timeoutMs / 1000)} s: ${seen}.`, {
          retryable: true,
          details: { host: this.host, instanceId: this.instanceId, lastSeen: seen },
        });
      }
      await sleepMs(delay, signal);
      delay = Math.min(5000, Math.ceil(delay * 1.5));
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Staged leftovers are swept later if this fails (the marker says when they expire).
    await this.staging?.deleteAll().catch(() => {});
  }
}

function checkRemotePath(remotePath: string): void {
  if (typeof remotePath !== "string" || !remotePath.startsWith("/") || remotePath.endsWith("/") || remotePath.includes("\0")) {
    throw new RunctlError("INVALID_ARGUMENT", `A remote path must be an absolute file path, got ${JSON.stringify(remotePath)}.`);
  }
}
