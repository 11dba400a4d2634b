import { setTimeout as sleep } from "node:timers/promises";
import { awsErrorCode, cloudError, isThrottlingError } from "../../errors/cloud-error.js";
import { RunctlError, abortError, throwIfAborted } from "../../errors/runctl-error.js";

/** Node network error codes that mean "the request may not have arrived; try again". */
const NETWORK_CODES = new Set(["ECONNRESET", "ECONNREFUSED", "ETIMEDOUT", "EPIPE", "EAI_AGAIN", "ENOTFOUND", "ENETUNREACH", "EHOSTUNREACH", "TimeoutError", "RequestTimeout"]);

/**
 * Whether an SSM call that failed this way may succeed if repeated: throttling
 * (ThrottlingException, RequestLimitExceeded, 429), 5xx, and dropped or timed-out connections.
 *
 * @example
 * ```ts
 * isTransientAwsError(new ThrottlingException({ message: "Rate exceeded", $metadata: {} })); // true
 * ```
 */
export function isTransientAwsError(err: unknown): boolean {
  if (isThrottlingError(err)) return true;
  const e = err as { $metadata?: { httpStatusCode?: number }; $retryable?: unknown; code?: unknown; name?: unknown } | null;
  const status = e?.$metadata?.httpStatusCode;
  if (status !== undefined && status >= 500) return true;
  if (e?.$retryable) return true;
  return (typeof e?.code === "string" && NETWORK_CODES.has(e.code)) || (typeof e?.name === "string" && NETWORK_CODES.has(e.name));
}

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
  readonly retries?: number;
  /** First backoff; doubles per attempt (full jitter) up to 10 s. @defaultValue 200 */
  readonly baseDelayMs?: number;
  /**
   * Which failures are retried. A call that must not run twice (SendCommand) retries only
   * throttling, which AWS refused before doing anything.
   * @defaultValue {@link isTransientAwsError}
   */
  readonly retryWhen?: (err: unknown) => boolean;
  /** The machine, for messages. @defaultValue none (required) */
  readonly host: string;
}

/**
 * Runs one SSM API call, retrying throttling and transient failures with exponential backoff and
 * full jitter (the SDK's adaptive mode also slows down on its side). When the retries run out a
 * throttled or transient failure becomes a retryable TRANSPORT_ERROR; any other AWS error is thrown
 * as it is, for the caller to map (see {@link ssmCallError}).
 *
 * @param operation - The API name, for messages (`"SendCommand"`).
 * @param attempt - Sends the request once; gets the abort signal to pass to the SDK.
 * @example
 * ```ts
 * const out = await callSsm("GetCommandInvocation", (s) => client.send(new GetCommandInvocationCommand(input), { abortSignal: s }), { host });
 * ```
 */
export async function callSsm<T>(operation: string, attempt: (signal: AbortSignal | undefined) => Promise<T>, options: SsmCallOptions): Promise<T> {
  const retries = options.retries ?? 6;
  const base = options.baseDelayMs ?? 200;
  const signal = options.signal;
  for (let n = 0; ; n++) {
    throwIfAborted(signal);
    try {
      return await attempt(signal);
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      if (!(options.retryWhen ?? isTransientAwsError)(err)) throw err;
      if (n >= retries) {
        const throttled = isThrottlingError(err);
        const awsCode = awsErrorCode(err);
        throw new RunctlError(
          "TRANSPORT_ERROR",
          `SSM ${operation} for ${options.host} ${throttled ? "was throttled" : "failed"} ${n + 1} times${awsCode ? ` (${awsCode})` : ""}; try again later${throttled ? " or run fewer commands at once" : ""}.`,
          { retryable: true, cause: err, details: { operation, host: options.host, ...(awsCode ? { awsCode } : {}), attempts: n + 1 } },
        );
      }
      await pause(Math.random() * Math.min(10_000, base * 2 ** n), signal);
    }
  }
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

/**
 * Sleeps, rejecting with ABORTED when the signal fires.
 *
 * @example
 * ```ts
 * await pause(250, signal);
 * ```
 */
export async function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    await sleep(ms, undefined, signal ? { signal } : {});
  } catch (cause) {
    if (signal?.aborted) throw abortError(signal);
    throw cause;
  }
}
