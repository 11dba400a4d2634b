import { awsCall, resolveAwsRetry } from "../../aws/aws-call.js";
import { awsErrorCode, cloudError, isThrottlingError, isTransientAwsError } from "../../aws/aws-errors.js";
import { RunctlError } from "../../errors/runctl-error.js";

/**
 * How {@link callSsm} retries.
 *
 * @example
 * ```ts
 * const o: SsmCallOptions = { host: "i-0123456789abcdef0", retries: 6, signal };
 * ```
 */
export interface SsmCallOptions {
  /** Aborts the call and its waits with ABORTED. @defaultValue none */
  readonly signal?: AbortSignal | undefined;
  /** Extra attempts after a transient failure. @defaultValue 6 */
  readonly retries?: number | undefined;
  /** First backoff; doubles per attempt (times a random 1–2) up to 10 s. @defaultValue 200 */
  readonly baseDelayMs?: number | undefined;
  /**
   * Which failures are retried. A call that must not run twice (SendCommand) retries only
   * throttling, which AWS refused before doing anything.
   * @defaultValue {@link isTransientAwsError}
   */
  readonly retryWhen?: ((err: unknown) => boolean) | undefined;
  /** The machine, for messages. @defaultValue none (required) */
  readonly host: string;
}

/**
 * Runs one SSM API call through the AWS layer's one retry loop ({@link awsCall}), retrying
 * throttling and transient failures with exponential backoff and jitter (the SDK client does not
 * retry on its own: `maxAttempts: 1`). When the retries run out a throttled or transient failure
 * becomes a retryable TRANSPORT_ERROR; any other AWS error is thrown as it is, for the caller to map (see {@link ssmCallError}).
 *
 * @param operation - The API name, for messages (`"SendCommand"`).
 * @param attempt - Sends the request once; gets the abort signal to pass to the SDK.
 * @example
 * ```ts
 * const out = await callSsm("GetCommandInvocation", (s) => client.send(new GetCommandInvocationCommand(input), { abortSignal: s }), { host });
 * ```
 */
export async function callSsm<T>(operation: string, attempt: (signal: AbortSignal | undefined) => Promise<T>, options: SsmCallOptions): Promise<T> {
  const retry = resolveAwsRetry({ retries: options.retries ?? 6, minDelayMs: options.baseDelayMs ?? 200, maxDelayMs: 10_000 });
  return awsCall(operation, () => attempt(options.signal), {
    retry,
    signal: options.signal,
    retryWhen: options.retryWhen ?? isTransientAwsError,
    giveUp: (err, { attempts, retried }) => {
      // Not worth repeating: the caller maps it (ssmCallError), as the AWS error it is.
      if (!retried) return err as Error;
      const throttled = isThrottlingError(err);
      const awsCode = awsErrorCode(err);
      return new RunctlError(
        "TRANSPORT_ERROR",
        `SSM ${operation} for ${options.host} ${throttled ? "was throttled" : "failed"} ${attempts} times${awsCode ? ` (${awsCode})` : ""}; try again later${throttled ? " or run fewer commands at once" : ""}.`,
        { retryable: true, cause: err, details: { operation, host: options.host, ...(awsCode ? { awsCode } : {}), attempts } },
      );
    },
  });
}

/**
 * Maps an AWS error of an SSM call that is not transient: an instance SSM does not manage (or
 * whose agent is offline) is MACHINE_NOT_READY (retryable: the agent may be starting); anything
 * else a CLOUD_ERROR naming the call and the AWS code.
 *
 * @example
 * ```ts
 * try { await client.send(cmd) } catch (e) { throw ssmCallError(e, "SendCommand", "i-0123456789abcdef0") }
 * ```
 */
export function ssmCallError(err: unknown, operation: string, instanceId: string): RunctlError {
  if (err instanceof RunctlError) return err;
  const code = awsErrorCode(err);
  if (code === "InvalidInstanceId") {
    return new RunctlError(
      "MACHINE_NOT_READY",
      `${instanceId} is not reachable through SSM (${code}): its SSM agent is not online yet, or the instance is stopped, not in this region, or lacks an instance profile with AmazonSSMManagedInstanceCore.`,
      { retryable: true, cause: err, details: { operation, awsCode: code, instanceId } },
    );
  }
  return cloudError(err, `SSM ${operation} for ${instanceId}`);
}
