/**
 * The CLI's exit codes and its own errors. Exit codes are part of the CLI's contract: scripts branch
 * on them, so each kind of failure has its own.
 *
 * @example
 * ```ts
 * if (code === EXIT_CODES.notFound) console.error("no such run");
 * ```
 */
export const EXIT_CODES = {
  /** The command did what it was asked (for `logs -f`, `attach`: the run succeeded). */
  ok: 0,
  /** The run failed (or was canceled/interrupted), or the operation failed. */
  failed: 1,
  /** Bad command line: unknown command or flag, missing or extra argument, bad value. */
  usage: 2,
  /** The run id is unknown in `$RUNCTL_HOME/runs`. */
  notFound: 3,
  /** Stopped by SIGINT (Ctrl-C); a followed run goes on. */
  interrupted: 130,
} as const;

/**
 * One of {@link EXIT_CODES}' values.
 *
 * @example
 * ```ts
 * const code: ExitCode = EXIT_CODES.usage; // 2
 * ```
 */
export type ExitCode = (typeof EXIT_CODES)[keyof typeof EXIT_CODES];

/**
 * An error the CLI reports itself, with the code printed in `runctl: <message> (<code>)` and the
 * process exit code.
 *
 * @example
 * ```ts
 * throw new CliError("UNSUPPORTED_PROVIDER", "Run r1 ran on ec2; use the SDK.", EXIT_CODES.failed);
 * ```
 */
export class CliError extends Error {
  /** A stable machine-readable code (a RunctlError code, or `USAGE`). */
  readonly code: string;
  /** The process exit code. @defaultValue {@link EXIT_CODES}.failed */
  readonly exitCode: ExitCode;

  constructor(code: string, message: string, exitCode: ExitCode = EXIT_CODES.failed, options?: { readonly cause?: unknown }) {
    super(message, options);
    this.name = "CliError";
    this.code = code;
    this.exitCode = exitCode;
  }
}

/**
 * A bad command line: exit code 2, code `USAGE`.
 *
 * @example
 * ```ts
 * throw new UsageError("logs needs a RUN id");
 * ```
 */
export class UsageError extends CliError {
  constructor(message: string) {
    super("USAGE", message, EXIT_CODES.usage);
    this.name = "UsageError";
  }
}

/**
 * What the CLI reports for any thrown value: code, message and exit code.
 *
 * @example
 * ```ts
 * const reported: ReportedError = { code: "RUN_NOT_FOUND", message: "No run r1", exitCode: 3 };
 * ```
 */
export interface ReportedError {
  /** Stable code: a RunctlError code, a CLI code (`USAGE`, `IO_ERROR`, `PYTHON_NOT_FOUND`, `PLAN_LOAD_FAILED`), or `INTERNAL` for unexpected errors. */
  readonly code: string;
  /** What went wrong, for people. */
  readonly message: string;
  /** The process exit code. */
  readonly exitCode: ExitCode;
}

/**
 * Classifies a thrown value. RunctlErrors are recognised by shape (not `instanceof`), since a plan
 * file may load a second copy of the SDK. A Node system error (ENOENT, EACCES, ...) is `IO_ERROR`
 * with Node's message (which names the path); anything else without a code is `INTERNAL`.
 *
 * @param aborted - Whether the command's signal had fired: any error is then an interruption. @defaultValue false
 * @example
 * ```ts
 * const { code, exitCode } = reportError(err, signal.aborted);
 * ```
 */
export function reportError(err: unknown, aborted = false): ReportedError {
  if (err instanceof CliError) return { code: err.code, message: err.message, exitCode: err.exitCode };
  const message = err instanceof Error ? err.message : String(err);
  const code = isSystemError(err) ? "IO_ERROR" : typeof err === "object" && err !== null && typeof (err as { code?: unknown }).code === "string" ? (err as { code: string }).code : "INTERNAL";
  if (code === "ABORTED" || aborted) return { code: "ABORTED", message: aborted ? "Interrupted." : message, exitCode: EXIT_CODES.interrupted };
  if (code === "RUN_NOT_FOUND") return { code, message, exitCode: EXIT_CODES.notFound };
  return { code, message, exitCode: EXIT_CODES.failed };
}

/** A Node system error (ENOENT, EACCES, ...): its message names the call and the path; its code is Node's, not ours. */
function isSystemError(err: unknown): boolean {
  return typeof err === "object" && err !== null && typeof (err as { syscall?: unknown }).syscall === "string" && typeof (err as { errno?: unknown }).errno === "number";
}

/**
 * The exit code for how a followed run ended: 0 only for `succeeded`; `detached` (this process
 * stopped following on SIGINT) is 130.
 *
 * @example
 * ```ts
 * process.exitCode = exitCodeForStatus((await run).status);
 * ```
 */
export function exitCodeForStatus(status: string): ExitCode {
  if (status === "succeeded") return EXIT_CODES.ok;
  if (status === "detached") return EXIT_CODES.interrupted;
  return EXIT_CODES.failed;
}
