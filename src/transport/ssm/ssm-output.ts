import type { Readable } from "node:stream";
import type { GetCommandInvocationCommandOutput } from "@aws-sdk/client-ssm";
import { isRunctlError } from "../../errors/runctl-error.js";
import type { RemoteExecHandle } from "../ssh/exec-handle.js";
import { sleepMs } from "../../aws/aws-poll.js";
import { SSM_TRANSPORT_DEFAULTS } from "./ssm-transport-options.js";
import type { SsmStaging } from "./ssm-staging.js";

/**
 * Inline output this close to AWS's limit may have been cut (the limits count characters, and
 * multi-byte text or a truncation notice make the exact length uncertain).
 */
const NEAR_LIMIT = 64;

/** Tries of reading an output object that is not there yet (S3 upload and status are not atomic). */
const OUTPUT_READ_TRIES = 4;

/**
 * Where one command's output is.
 *
 * @example
 * ```ts
 * const where: OutputSource = { invocation, commandId, instanceId, staging };
 * ```
 */
export interface OutputSource {
  /** The final GetCommandInvocation answer. @defaultValue none (required) */
  readonly invocation: GetCommandInvocationCommandOutput;
  /** SendCommand's CommandId. @defaultValue none (required) */
  readonly commandId: string;
  /** The instance it ran on. @defaultValue none (required) */
  readonly instanceId: string;
  /** Where SSM also wrote the whole output, when staging is set. @defaultValue none (inline output only) */
  readonly staging?: SsmStaging | undefined;
  /** Aborts reading. @defaultValue none */
  readonly signal?: AbortSignal | undefined;
}

/**
 * Pushes a finished command's output into `handle`: stdout, then stderr. When the inline content
 * may have been cut at AWS's limits (24,000 characters of stdout, 8,000 of stderr), the whole
 * stream is read from the staging bucket (streamed, with the handle's flow control); without
 * staging, or when the object cannot be read, the inline part is pushed and a notice is appended
 * to stderr. Returns the streams that arrived truncated.
 *
 * @example
 * ```ts
 * const cut = await deliverOutput(handle, { invocation, commandId, instanceId, staging });
 * if (cut.length > 0) console.warn("output truncated:", cut);
 * ```
 */
export async function deliverOutput(handle: RemoteExecHandle, source: OutputSource): Promise<("stdout" | "stderr")[]> {
  const truncated: ("stdout" | "stderr")[] = [];
  const streams = [
    ["stdout", source.invocation.StandardOutputContent ?? "", SSM_TRANSPORT_DEFAULTS.inlineStdoutChars],
    ["stderr", source.invocation.StandardErrorContent ?? "", SSM_TRANSPORT_DEFAULTS.inlineStderrChars],
  ] as const;
  for (const [stream, inline, limit] of streams) {
    const mayBeCut = inline.length >= limit - NEAR_LIMIT;
    if (mayBeCut && source.staging) {
      const body = await openOutputObject(source.staging, source.staging.outputKey(source.commandId, source.instanceId, stream), source.signal);
      if (body) {
        await pushStream(handle, stream, body);
        continue;
      }
    }
    if (inline !== "") handle.push(stream, Buffer.from(inline, "utf8"));
    if (mayBeCut) truncated.push(stream);
  }
  for (const stream of truncated) {
    const limit = stream === "stdout" ? SSM_TRANSPORT_DEFAULTS.inlineStdoutChars : SSM_TRANSPORT_DEFAULTS.inlineStderrChars;
    const why = source.staging ? "its copy in the staging bucket could not be read" : "pass `staging` to ssmTransport() to get whole output";
    handle.push("stderr", Buffer.from(`\n[runctl] SSM returned only the first ${limit} characters of ${stream}; ${why}.\n`, "utf8"));
  }
  return truncated;
}

/** Opens an output object, waiting briefly for one that is not there yet; undefined if it never shows. */
async function openOutputObject(staging: SsmStaging, key: string, signal: AbortSignal | undefined): Promise<Readable | undefined> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await staging.storage.get(key, signal ? { signal } : {});
    } catch (err) {
      if (signal?.aborted || !isRunctlError(err) || attempt >= OUTPUT_READ_TRIES) return undefined;
      if (err.code !== "NOT_FOUND" && !err.retryable) return undefined;
      await sleepMs(250 * attempt, signal);
    }
  }
}

/** Pushes a stream's chunks, waiting while the handle's reader asks for a pause. */
async function pushStream(handle: RemoteExecHandle, stream: "stdout" | "stderr", body: Readable): Promise<void> {
  let gate: Promise<void> | undefined;
  let open: (() => void) | undefined;
  handle.setFlowControl({
    pause: () => {
      gate ??= new Promise<void>((resolve) => (open = resolve));
    },
    resume: () => {
      gate = undefined;
      open?.();
    },
  });
  try {
    for await (const chunk of body) {
      handle.push(stream, Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array));
      if (gate) await gate;
    }
  } finally {
    body.destroy();
  }
}
