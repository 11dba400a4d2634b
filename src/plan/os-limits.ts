import { RunctlError, type RunctlErrorCode } from "../errors/runctl-error.js";

/**
 * Longest single argument or `NAME=value` environment string, in UTF-8 bytes, that Linux's
 * `execve` accepts (MAX_ARG_STRLEN, 32 pages of 4 KiB, including the terminating NUL).
 */
export const MAX_ARG_BYTES = 131_072 - 1;

/**
 * Budget for everything runctl itself puts on the trainer's command line and in its environment
 * (argv plus the run's own variables, `RUNCTL_HPARAMS` included), in UTF-8 bytes. Linux allows
 * about 2 MiB in all (ARG_MAX, a quarter of the default 8 MiB stack); half is left to the machine's
 * own environment and the agent.
 */
export const MAX_EXEC_BYTES = 1024 * 1024;

/** A UTF-16 surrogate with no partner: not representable in UTF-8, so never the same string on the machine. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Why `text` cannot be one argv element or environment string exactly as written, or undefined when
 * it can: a NUL byte (C strings end there), a lone surrogate (no UTF-8 form), or more than
 * {@link MAX_ARG_BYTES} bytes.
 *
 * @example
 * ```ts
 * execStringProblem("a\0b"); // "contains a NUL character"
 * ```
 */
export function execStringProblem(text: string): string | undefined {
  if (text.includes("\0")) return "contains a NUL character";
  if (LONE_SURROGATE.test(text)) return "contains a lone UTF-16 surrogate (not valid Unicode text)";
  const bytes = Buffer.byteLength(text, "utf8");
  if (bytes > MAX_ARG_BYTES) return `is ${bytes} bytes, over the operating system's limit of ${MAX_ARG_BYTES} bytes for one argument or variable`;
  return undefined;
}

/**
 * Throws `code` naming `what` when `text` cannot be passed through `execve` exactly (see
 * {@link execStringProblem}).
 *
 * @example
 * ```ts
 * checkExecString(".env(): WANDB_API_KEY", value, "INVALID_ARGUMENT");
 * ```
 */
export function checkExecString(what: string, text: string, code: RunctlErrorCode): void {
  const problem = execStringProblem(text);
  if (problem !== undefined) throw new RunctlError(code, `${what} ${problem}; it could not reach the trainer as written.`, { details: { what } });
}

/**
 * Throws INVALID_ARGUMENT when the trainer's argv and the run's environment together exceed
 * {@link MAX_EXEC_BYTES} (each string counted with its NUL and pointer, as the kernel does).
 *
 * @example
 * ```ts
 * checkExecTotal(".train()", ["train.py", "--lr=0.1"], { WANDB_MODE: "offline" });
 * ```
 */
export function checkExecTotal(call: string, argv: readonly string[], env: Readonly<Record<string, string>>): void {
  let total = 0;
  for (const arg of argv) total += Buffer.byteLength(arg, "utf8") + 1 + 8;
  for (const [name, value] of Object.entries(env)) total += Buffer.byteLength(`${name}=${value}`, "utf8") + 1 + 8;
  if (total > MAX_EXEC_BYTES) {
    throw new RunctlError(
      "INVALID_ARGUMENT",
      `${call}: the trainer's arguments and environment come to ${total} bytes, over runctl's limit of ${MAX_EXEC_BYTES} bytes (the operating system allows about 2 MiB with the machine's own environment); pass large values through a file instead.`,
      { details: { bytes: total, maxBytes: MAX_EXEC_BYTES } },
    );
  }
}
