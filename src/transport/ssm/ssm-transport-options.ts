import type { SSMClient } from "@aws-sdk/client-ssm";
import { RunctlError } from "../../errors/runctl-error.js";
import type { Storage } from "../../storage/types.js";

/**
 * Options of {@link ssmTransport}. Nothing secret goes into an SSM command: staged objects are
 * fetched on the machine with its own credentials (its instance profile).
 *
 * @example
 * ```ts
 * const options: SsmTransportOptions = {
 *   instanceId: "i-0123456789abcdef0",
 *   region: "us-east-1",
 *   staging: s3("s3://my-bucket/runctl"),
 *   runId: "20261121-151300-k3f9a2",
 * };
 * ```
 */
export interface SsmTransportOptions {
  /**
   * The EC2 instance (a managed node with the SSM agent online), `i-` and 8 or 17 hex digits.
   * @defaultValue none (required)
   */
  readonly instanceId: string;
  /**
   * A ready SSM client (its region and credentials are used as they are).
   * @defaultValue `new SSMClient({ region, maxAttempts: 1 })` (runctl retries; see docs/decisions/0012-aws-retries.md)
   */
  readonly client?: SSMClient | undefined;
  /** Region of the default client. @defaultValue the SDK's chain (`AWS_REGION`, `~/.aws/config`) */
  readonly region?: string | undefined;
  /**
   * An S3 {@link Storage} (`s3("s3://bucket/prefix")`) through which everything SSM cannot carry
   * travels: stdin, `putFile`/`getFile`, and whole command output (SSM returns only the first
   * 24,000 characters of stdout and 8,000 of stderr inline). Objects go under
   * `runctl-staging/<scope>/` and are deleted after use; `close()` deletes the whole folder. The
   * instance profile must allow `s3:GetObject`/`s3:PutObject` there, and the machine needs the `aws` CLI.
   * Whatever a caller sends on stdin sits in the bucket while its command runs, the engine's launch
   * spec included (so the transport reports `stdinLeavesCopy`): runctl never sends credentials on
   * it, the machine uses its instance profile, and `forwardCredentials: true` is refused.
   * @defaultValue none: stdin and files over 32 KiB are refused (UNSUPPORTED), output over the
   * inline limits is truncated (with a warning in the stderr tail)
   */
  readonly staging?: Storage | undefined;
  /** Scope of staged objects (`runctl-staging/<runId>/`) and the run id in the staging marker. @defaultValue `instanceId` */
  readonly runId?: string | undefined;
  /** Who staged the objects, recorded in the staging marker for the leak sweeper. @defaultValue `user@host` of this process */
  readonly owner?: string | undefined;
  /** How long staged objects may live before the leak sweeper removes them (marker `runctl:expires-at`). @defaultValue 86_400_000 (24 h) */
  readonly stagingTtlMs?: number | undefined;
  /** First wait before polling a command's status; later polls back off (×1.5) up to `maxPollMs`. @defaultValue 250 */
  readonly pollMs?: number | undefined;
  /** Longest wait between two status polls. @defaultValue 2000 */
  readonly maxPollMs?: number | undefined;
  /**
   * Longest a command may run on the machine (AWS-RunShellScript's `executionTimeout`, whole
   * seconds, at most 48 h); beyond it SSM kills it and exec rejects with TRANSPORT_ERROR.
   * @defaultValue 3_600_000 (1 h, AWS's own default)
   */
  readonly commandTimeoutMs?: number | undefined;
  /**
   * How long SSM may try to deliver a command to an agent that is not answering (SendCommand
   * `TimeoutSeconds`, at least 30 s); beyond it exec rejects with MACHINE_NOT_READY.
   * @defaultValue 300_000
   */
  readonly deliveryTimeoutMs?: number | undefined;
  /**
   * The user commands run as. SSM runs them as root; runctl wraps them in `sudo -n -u USER -H`, so
   * files, `$HOME` (runctl's `~/.runctl`) and processes belong to that user. `"root"` or `null`
   * runs them as the SSM agent's user without sudo (`null` is for agents that do not run as root,
   * such as test doubles).
   * @defaultValue "ubuntu" (the login user of Ubuntu AMIs; `"ec2-user"` on Amazon Linux)
   */
  readonly user?: string | null | undefined;
  /** Extra attempts of an SSM call that was throttled or failed transiently, with backoff (on top of the SDK's own). @defaultValue 6 */
  readonly throttleRetries?: number | undefined;
  /** Name of the machine in messages. @defaultValue `instanceId` */
  readonly host?: string | undefined;
}

/**
 * Defaults of {@link SsmTransportOptions}.
 *
 * @example
 * ```ts
 * const pollMs = options.pollMs ?? SSM_TRANSPORT_DEFAULTS.pollMs; // 250
 * ```
 */
export const SSM_TRANSPORT_DEFAULTS = {
  user: "ubuntu",
  pollMs: 250,
  maxPollMs: 2000,
  commandTimeoutMs: 3_600_000,
  deliveryTimeoutMs: 300_000,
  stagingTtlMs: 86_400_000,
  throttleRetries: 6,
  /** AWS's inline limits: GetCommandInvocation returns at most this much of each stream. */
  inlineStdoutChars: 24_000,
  inlineStderrChars: 8_000,
  /** Largest file `putFile` sends inline (base64 in the command) when there is no staging. */
  inlinePutBytes: 32 * 1024,
  /** Largest file `getFile` reads inline (base64 in stdout, under the 24,000-character limit) without staging. */
  inlineGetBytes: 16 * 1024,
} as const;

const INSTANCE_ID = /^i-[0-9a-f]{8,17}$/;
const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;
const SCOPE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * {@link SsmTransportOptions} with defaults applied and every value checked (see each option there).
 *
 * @example
 * ```ts
 * const o: ResolvedSsmOptions = resolveSsmOptions({ instanceId: "i-0123456789abcdef0" });
 * ```
 */
export interface ResolvedSsmOptions {
  /** @defaultValue none (required) */
  readonly instanceId: string;
  /** @defaultValue `instanceId` */
  readonly host: string;
  /** The sudo target, or null for no sudo (`"root"` becomes null). @defaultValue "ubuntu" */
  readonly user: string | null;
  /** Staging folder name: `runId`, else `instanceId`. @defaultValue `instanceId` */
  readonly scope: string;
  /** @defaultValue undefined */
  readonly runId: string | undefined;
  /** @defaultValue 250 */
  readonly pollMs: number;
  /** @defaultValue 2000 (never below `pollMs`) */
  readonly maxPollMs: number;
  /** @defaultValue 3_600_000 */
  readonly commandTimeoutMs: number;
  /** @defaultValue 300_000 */
  readonly deliveryTimeoutMs: number;
  /** @defaultValue 86_400_000 */
  readonly stagingTtlMs: number;
  /** @defaultValue 6 */
  readonly throttleRetries: number;
}

function positive(name: string, value: number | undefined, fallback: number, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  const v = value ?? fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) {
    throw new RunctlError("INVALID_ARGUMENT", `ssmTransport() ${name} must be a number from ${min} to ${max}, got ${String(value)}.`);
  }
  return v;
}

/**
 * Validates {@link SsmTransportOptions} and applies the defaults.
 *
 * @throws RunctlError INVALID_ARGUMENT naming the bad option.
 * @example
 * ```ts
 * const o = resolveSsmOptions({ instanceId: "i-0123456789abcdef0" }); // o.user === "ubuntu"
 * ```
 */
export function resolveSsmOptions(options: SsmTransportOptions): ResolvedSsmOptions {
  if (typeof options.instanceId !== "string" || !INSTANCE_ID.test(options.instanceId)) {
    throw new RunctlError("INVALID_ARGUMENT", `ssmTransport() instanceId must look like i-0123456789abcdef0, got ${JSON.stringify(options.instanceId)}.`);
  }
  const user = options.user === undefined ? SSM_TRANSPORT_DEFAULTS.user : options.user;
  if (user !== null && (typeof user !== "string" || !USER_NAME.test(user))) {
    throw new RunctlError("INVALID_ARGUMENT", `ssmTransport() user must be a Unix user name (e.g. "ubuntu"), "root" or null, got ${JSON.stringify(user)}.`);
  }
  if (options.runId !== undefined && (typeof options.runId !== "string" || !SCOPE.test(options.runId))) {
    throw new RunctlError("INVALID_ARGUMENT", `ssmTransport() runId must be letters, digits, ".", "_" or "-", got ${JSON.stringify(options.runId)}.`);
  }
  const pollMs = positive("pollMs", options.pollMs, SSM_TRANSPORT_DEFAULTS.pollMs);
  return {
    instanceId: options.instanceId,
    host: options.host ?? options.instanceId,
    // Root needs no sudo; the agent then runs as root.
    user: user === "root" ? null : user,
    scope: options.runId ?? options.instanceId,
    runId: options.runId,
    pollMs,
    maxPollMs: Math.max(pollMs, positive("maxPollMs", options.maxPollMs, SSM_TRANSPORT_DEFAULTS.maxPollMs)),
    commandTimeoutMs: positive("commandTimeoutMs", options.commandTimeoutMs, SSM_TRANSPORT_DEFAULTS.commandTimeoutMs, 1000, 172_800_000),
    deliveryTimeoutMs: positive("deliveryTimeoutMs", options.deliveryTimeoutMs, SSM_TRANSPORT_DEFAULTS.deliveryTimeoutMs, 30_000, 2_592_000_000),
    stagingTtlMs: positive("stagingTtlMs", options.stagingTtlMs, SSM_TRANSPORT_DEFAULTS.stagingTtlMs, 60_000),
    throttleRetries: positive("throttleRetries", options.throttleRetries, SSM_TRANSPORT_DEFAULTS.throttleRetries, 0, 20),
  };
}
