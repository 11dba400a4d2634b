import { CommandError, RunctlError } from "../errors/runctl-error.js";
import { lazySchema } from "../util/lazy-schema.js";
import type { ExecResult } from "../transport/types.js";
import { shellJoin } from "../transport/shell-quote.js";
import type { RemoteFileInfo, RemoteFiles } from "./diff.js";

/**
 * Agent exit code for "the folder does not match `expect` after sync-apply" (docs/agent-protocol.md).
 *
 * @defaultValue 6
 * @example
 * ```ts
 * if (result.exitCode === AGENT_EXIT_SYNC_VERIFY_FAILED) showMismatches(result.stdout);
 * ```
 */
export const AGENT_EXIT_SYNC_VERIFY_FAILED = 6;

/**
 * Agent exit code for "the tar stream had an absolute path, a `..` part, or a link/device member".
 *
 * @defaultValue 7
 * @example
 * ```ts
 * if (result.exitCode === AGENT_EXIT_UNSAFE_PATH) throw new RunctlError("UNSAFE_PATH", "...");
 * ```
 */
export const AGENT_EXIT_UNSAFE_PATH = 7;

const applyReplySchema = lazySchema((z) => z.union([
  z.object({ ok: z.literal(true), written: z.number().int().nonnegative(), deleted: z.number().int().nonnegative() }),
  z.object({
    ok: z.literal(false),
    mismatches: z.array(z.object({ path: z.string(), reason: z.string() })),
  }),
]));

/**
 * What `sync-apply` reported on success.
 *
 * @defaultValue none (both fields are always set)
 * @example
 * ```ts
 * const { written, deleted }: ApplyReply = parseApplyReply(result, call);
 * ```
 */
export interface ApplyReply {
  /** Files written. */
  readonly written: number;
  /** Files deleted. */
  readonly deleted: number;
}

/**
 * Facts for error messages: the command that ran and where.
 *
 * @defaultValue none (both fields are required)
 * @example
 * ```ts
 * const call: AgentCall = { argv: ["python3", agentPath, "manifest", dir], host: transport.host };
 * ```
 */
export interface AgentCall {
  /** The argv that ran. */
  readonly argv: readonly string[];
  /** The machine's name. */
  readonly host: string;
}

/**
 * Turns the output of `agent manifest DIR` into {@link RemoteFiles}. A non-zero exit is a
 * COMMAND_FAILED {@link CommandError}; unreadable output is AGENT_FAILED.
 *
 * @defaultValue no defaults
 * @example
 * ```ts
 * const result = await transport.exec([python, agentPath, "manifest", dir]);
 * const remote = parseManifestReply(result, { argv, host: transport.host });
 * ```
 */
export function parseManifestReply(result: ExecResult, call: AgentCall): RemoteFiles {
  if (result.exitCode !== 0) throw commandError(result, call);
  return parseManifestJson(result.stdout, call, result);
}

/**
 * Turns the manifest JSON the agent printed (`{"files": {...}}`, from `manifest DIR` or the first line
 * of `sync DIR`) into {@link RemoteFiles}; unreadable output is AGENT_FAILED.
 *
 * @defaultValue no defaults
 * @example
 * ```ts
 * const remote = parseManifestJson(firstLine, { argv, host: transport.host }, { stdoutTail: firstLine, stderrTail: "" });
 * ```
 */
export function parseManifestJson(json: string, call: AgentCall, tails: Pick<ExecResult, "stdoutTail" | "stderrTail">): RemoteFiles {
  const reply = parseJson(json) as { files?: unknown } | undefined;
  const files = typeof reply === "object" && reply !== null ? reply.files : undefined;
  if (typeof files !== "object" || files === null || Array.isArray(files)) throw agentFailed(call, tails, 'its manifest output is not {"files": {...}}');
  // Read the raw JSON object (zod's record drops a "__proto__" key; JSON.parse made it an own
  // property) and copy its own keys one by one (no array of entries: ~3x faster on 2,000 files),
  // defining a file named "__proto__" as data instead of assigning it, which would set the prototype.
  const remote: Record<string, RemoteFileInfo> = {};
  const raw = files as Record<string, unknown>;
  for (const path of Object.keys(raw)) {
    // Checked by hand: zod costs ~5 us an entry, which a 50,000-file manifest would feel.
    const info = fileInfoOf(raw[path]);
    if (typeof info === "string") throw agentFailed(call, tails, `its manifest entry for ${JSON.stringify(path)} is malformed: ${info}`);
    if (path === "__proto__") Object.defineProperty(remote, path, { value: info, enumerable: true, writable: true, configurable: true });
    else remote[path] = info;
  }
  return remote;
}

const SHA256_HEX = /^[0-9a-fA-F]{64}$/;

function fileInfoOf(value: unknown): RemoteFileInfo | string {
  if (typeof value !== "object" || value === null) return "not an object";
  const { size, mode, sha256 } = value as Record<string, unknown>;
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) return "size is not a non-negative integer";
  if (typeof mode !== "number" || !Number.isSafeInteger(mode) || mode < 0) return "mode is not a non-negative integer";
  if (typeof sha256 !== "string" || !SHA256_HEX.test(sha256)) return "sha256 is not 64 hex digits";
  return { size, mode, sha256: sha256.toLowerCase() };
}

/**
 * Interprets the result of `agent sync-apply DIR`: exit 0 with `{"ok": true, ...}`; exit 6 is
 * SYNC_VERIFY_FAILED listing the mismatched paths (in `details.mismatches`); exit 7 is UNSAFE_PATH; any
 * other failure is a COMMAND_FAILED {@link CommandError}.
 *
 * @defaultValue no defaults
 * @example
 * ```ts
 * const { written, deleted } = parseApplyReply(await exec, { argv, host: transport.host });
 * ```
 */
export function parseApplyReply(result: ExecResult, call: AgentCall): ApplyReply {
  const json = parseJson(result.stdout);
  const reply = applyReplySchema().safeParse(json);
  if (result.exitCode === AGENT_EXIT_SYNC_VERIFY_FAILED) {
    const mismatches = reply.success && !reply.data.ok ? reply.data.mismatches : [];
    const shown = mismatches.slice(0, 10).map((m) => `  ${m.path}: ${m.reason}`);
    const more = mismatches.length > 10 ? [`  ... and ${mismatches.length - 10} more`] : [];
    throw new RunctlError(
      "SYNC_VERIFY_FAILED",
      [`The synced folder on ${call.host} does not match the local manifest (${mismatches.length} mismatches):`, ...shown, ...more].join("\n"),
      { details: { mismatches, host: call.host, stderrTail: result.stderrTail } },
    );
  }
  if (result.exitCode === AGENT_EXIT_UNSAFE_PATH) {
    throw new RunctlError("UNSAFE_PATH", `The agent on ${call.host} refused the sync stream: it holds an unsafe path. ${result.stderrTail.trim() || result.stdout.trim()}`.trim(), {
      details: { host: call.host, stdoutTail: result.stdoutTail, stderrTail: result.stderrTail },
    });
  }
  if (result.exitCode !== 0) throw commandError(result, call);
  if (!reply.success || !reply.data.ok) throw agentFailed(call, result, "its sync-apply output is not {\"ok\": true, ...}");
  return { written: reply.data.written, deleted: reply.data.deleted };
}

function parseJson(stdout: string): unknown {
  try {
    return JSON.parse(stdout);
  } catch {
    return undefined;
  }
}

/**
 * The COMMAND_FAILED {@link CommandError} for an agent call that exited non-zero.
 *
 * @defaultValue no defaults
 * @example
 * ```ts
 * if (result.exitCode !== 0) throw commandError(result, { argv, host: transport.host });
 * ```
 */
export function commandError(result: ExecResult, call: AgentCall): CommandError {
  return new CommandError({
    command: shellJoin(call.argv),
    host: call.host,
    exitCode: result.exitCode,
    signal: result.signal,
    durationMs: result.durationMs,
    stdoutTail: result.stdoutTail,
    stderrTail: result.stderrTail,
  });
}

function agentFailed(call: AgentCall, result: Pick<ExecResult, "stdoutTail" | "stderrTail">, what: string): RunctlError {
  return new RunctlError("AGENT_FAILED", `The runctl agent on ${call.host} answered ${shellJoin(call.argv)} unexpectedly: ${what}.`, {
    details: { host: call.host, stdoutTail: result.stdoutTail.slice(-2000), stderrTail: result.stderrTail.slice(-2000) },
  });
}
