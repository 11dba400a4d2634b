import { CancelCommandCommand, GetCommandInvocationCommand, type GetCommandInvocationCommandOutput, type SSMClient } from "@aws-sdk/client-ssm";
import { awsErrorCode } from "../../aws/aws-errors.js";
import { RunctlError, abortError } from "../../errors/runctl-error.js";
import { callSsm, ssmCallError } from "./ssm-call.js";
import { sleepMs } from "../../aws/aws-poll.js";

/** Statuses after which an invocation never changes. */
const TERMINAL = new Set(["Success", "Failed", "Cancelled", "TimedOut"]);

/** How long a new command may stay invisible to GetCommandInvocation (AWS is eventually consistent). */
const INVISIBLE_FOR_MS = 30_000;

/**
 * What {@link waitForInvocation} needs.
 *
 * @example
 * ```ts
 * const w: InvocationWait = { client, commandId, instanceId: "i-0123456789abcdef0", host: "gpu", pollMs: 250, maxPollMs: 2000, retries: 6, timeoutMs: 3_900_000 };
 * ```
 */
export interface InvocationWait {
  /** The SSM client to poll with. @defaultValue none (required) */
  readonly client: SSMClient;
  /** SendCommand's CommandId. @defaultValue none (required) */
  readonly commandId: string;
  /** The instance the command runs on. @defaultValue none (required) */
  readonly instanceId: string;
  /** The machine, for messages. @defaultValue none (required) */
  readonly host: string;
  /** First wait before a poll; each later wait is 1.5 times longer, up to `maxPollMs`. @defaultValue none (required) */
  readonly pollMs: number;
  /** Longest wait between polls. @defaultValue none (required) */
  readonly maxPollMs: number;
  /** Extra attempts of a throttled poll. @defaultValue none (required) */
  readonly retries: number;
  /** Give up (TRANSPORT_ERROR) when the command is not over after this long (SSM's own timeouts should end it first). @defaultValue none (required) */
  readonly timeoutMs: number;
  /** Aborting rejects with ABORTED (the caller cancels the command). @defaultValue none */
  readonly signal?: AbortSignal | undefined;
}

/**
 * Polls GetCommandInvocation with backoff until the command reaches a final status (Success,
 * Failed, Cancelled, TimedOut) and returns that answer. Pending, InProgress, Delayed and Cancelling
 * keep it polling; `InvocationDoesNotExist` right after SendCommand (eventual consistency) is
 * waited out for up to 30 s; throttled polls back off (see {@link callSsm}).
 *
 * @throws RunctlError ABORTED, TRANSPORT_ERROR (retryable) or CLOUD_ERROR.
 * @example
 * ```ts
 * const inv = await waitForInvocation({ client, commandId, instanceId, host, pollMs: 250, maxPollMs: 2000, retries: 6, timeoutMs: 60_000 });
 * console.log(inv.Status, inv.ResponseCode);
 * ```
 */
export async function waitForInvocation(w: InvocationWait): Promise<GetCommandInvocationCommandOutput> {
  const sentAt = Date.now();
  let delay = w.pollMs;
  let lastStatus = "not visible yet";
  for (;;) {
    await sleepMs(delay, w.signal);
    delay = Math.min(w.maxPollMs, Math.ceil(delay * 1.5));
    let out: GetCommandInvocationCommandOutput;
    try {
      out = await callSsm(
        "GetCommandInvocation",
        (s) => w.client.send(new GetCommandInvocationCommand({ CommandId: w.commandId, InstanceId: w.instanceId }), s ? { abortSignal: s } : {}),
        { host: w.host, retries: w.retries, signal: w.signal },
      );
    } catch (err) {
      if (w.signal?.aborted) throw abortError(w.signal);
      if (awsErrorCode(err) === "InvocationDoesNotExist" && Date.now() - sentAt < INVISIBLE_FOR_MS) continue;
      if (awsErrorCode(err) === "InvocationDoesNotExist") {
        throw new RunctlError("TRANSPORT_ERROR", `SSM never showed command ${w.commandId} on ${w.host} (InvocationDoesNotExist for ${Math.round((Date.now() - sentAt) / 1000)} s).`, {
          retryable: true,
          cause: err,
          details: { host: w.host, commandId: w.commandId },
        });
      }
      throw ssmCallError(err, "GetCommandInvocation", w.instanceId);
    }
    lastStatus = out.Status ?? "unknown";
    if (TERMINAL.has(lastStatus)) return out;
    if (Date.now() - sentAt > w.timeoutMs) {
      throw new RunctlError("TRANSPORT_ERROR", `SSM command ${w.commandId} on ${w.host} was still ${lastStatus} after ${Math.round(w.timeoutMs / 1000)} s.`, {
        retryable: false,
        details: { host: w.host, commandId: w.commandId, status: lastStatus },
      });
    }
  }
}

/**
 * Asks SSM to cancel a command (it kills the command's processes on the machine). Best effort:
 * bounded to 15 s, errors ignored (a command that already ended cannot be cancelled).
 *
 * @example
 * ```ts
 * await cancelInvocation(client, commandId, "i-0123456789abcdef0", "gpu");
 * ```
 */
export async function cancelInvocation(client: SSMClient, commandId: string, instanceId: string, host: string): Promise<void> {
  const signal = AbortSignal.timeout(15_000);
  await callSsm("CancelCommand", (s) => client.send(new CancelCommandCommand({ CommandId: commandId, InstanceIds: [instanceId] }), s ? { abortSignal: s } : {}), {
    host,
    retries: 4,
    signal,
  }).catch(() => {});
}
