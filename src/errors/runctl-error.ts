/**
 * Stable error codes. A code is part of runctl's semver contract: it never changes meaning.
 *
 * @example
 * ```ts
 * try { plan.train("missing.py") } catch (e) {
 *   if (e instanceof RunctlError && e.code === "SCRIPT_NOT_FOUND") console.error(e.message);
 * }
 * ```
 */
export type RunctlErrorCode =
  | "INVALID_ARGUMENT"
  | "INVALID_URI"
  | "INVALID_STORAGE_KEY"
  | "HYPERPARAM_NOT_SERIALIZABLE"
  | "SCRIPT_NOT_FOUND"
  | "SYNC_DIR_NOT_FOUND"
  | "SYNC_TOO_LARGE"
  | "SYNC_VERIFY_FAILED"
  | "UNSAFE_PATH"
  | "STORAGE_UNREACHABLE"
  | "STORAGE_ERROR"
  | "NOT_FOUND"
  | "TRANSPORT_ERROR"
  | "HOST_UNREACHABLE"
  | "AUTH_FAILED"
  | "HOST_KEY_MISMATCH"
  | "COMMAND_FAILED"
  | "AGENT_FAILED"
  | "SETUP_FAILED"
  | "CONTAINER_RUNTIME_UNAVAILABLE"
  | "CONTAINER_FAILED"
  | "IMAGE_UNAVAILABLE"
  | "GPU_UNAVAILABLE"
  | "DATA_FAILED"
  | "TRAINING_FAILED"
  | "MAX_DURATION_EXCEEDED"
  | "CHECKPOINT_NOT_FOUND"
  | "CHECKPOINT_CORRUPT"
  | "RUN_NOT_FOUND"
  | "NO_FREE_HOST"
  | "UNSUPPORTED"
  | "CLOUD_ERROR"
  | "CAPACITY_UNAVAILABLE"
  | "PROVISION_FAILED"
  | "PROVISION_TIMEOUT"
  | "MACHINE_NOT_READY"
  | "BUDGET_EXCEEDED"
  | "PRICE_UNKNOWN"
  | "RESOURCE_IN_USE"
  | "JOB_REJECTED"
  | "ABORTED";

/** Options accepted by {@link RunctlError}'s constructor. */
export interface RunctlErrorOptions {
  /** Whether repeating the same call may succeed (a dropped connection, throttling). @defaultValue false */
  readonly retryable?: boolean | undefined;
  /** The underlying error. */
  readonly cause?: unknown;
  /** Extra structured facts (never secrets). */
  readonly details?: Readonly<Record<string, unknown>> | undefined;
}

/**
 * Brands on the prototypes, from the global symbol registry: every copy of runctl loaded in one
 * process (two versions in node_modules, a bundled copy) shares them, so `instanceof` and
 * {@link isRunctlError} hold across copies (undici does the same).
 */
const RUNCTL_ERROR_BRAND = Symbol.for("runctl.error");
const COMMAND_ERROR_BRAND = Symbol.for("runctl.error.CommandError");

/** Whether `value` carries `brand` (set on a prototype, so inherited). */
function hasBrand(value: unknown, brand: symbol): boolean {
  return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[brand] === true;
}

/**
 * The one base class of every error runctl throws or reports. `instanceof RunctlError` is true for
 * errors from any copy of runctl in the process (a brand, not the prototype chain, decides).
 *
 * @example
 * ```ts
 * if (err instanceof RunctlError && err.retryable) await retryLater();
 * ```
 */
export class RunctlError extends Error {
  /** Stable machine-readable code. */
  readonly code: RunctlErrorCode;
  /** Whether the same call may succeed when repeated. @defaultValue false */
  readonly retryable: boolean;
  /** Structured facts about the failure (never secrets). @defaultValue `{}` */
  readonly details: Readonly<Record<string, unknown>>;

  static {
    Object.defineProperty(this.prototype, RUNCTL_ERROR_BRAND, { value: true });
  }

  /**
   * `err instanceof RunctlError` checks the brand, so it holds across copies of runctl; for a
   * subclass without a brand of its own, the usual prototype chain.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return this === RunctlError ? hasBrand(value, RUNCTL_ERROR_BRAND) : Function.prototype[Symbol.hasInstance].call(this, value);
  }

  constructor(code: RunctlErrorCode, message: string, options: RunctlErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "RunctlError";
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.details = options.details ?? {};
  }

  /** A JSON-safe form, used in event journals and `error` fields of results. */
  toJSON(): {
    /** The error class's name (`RunctlError`, `CommandError`). */
    name: string;
    /** Stable machine-readable code. */
    code: RunctlErrorCode;
    /** What went wrong, for people. */
    message: string;
    /** Whether the same call may succeed when repeated. */
    retryable: boolean;
    /** Structured facts about the failure (never secrets). */
    details: Readonly<Record<string, unknown>>;
  } {
    return { name: this.name, code: this.code, message: this.message, retryable: this.retryable, details: this.details };
  }
}

/** Facts carried by a {@link CommandError}. */
export interface CommandFailure {
  /** The command as the user would read it (argv joined with quoting). */
  readonly command: string;
  /** The machine it ran on. */
  readonly host: string;
  /** Exit code, or null when the process was killed by a signal or the connection dropped. */
  readonly exitCode: number | null;
  /** Terminating signal name, if any. */
  readonly signal: string | null;
  /** Wall time of the command. */
  readonly durationMs: number;
  /** The last bytes of stdout (bounded). */
  readonly stdoutTail: string;
  /** The last bytes of stderr (bounded). */
  readonly stderrTail: string;
}

/**
 * A command on a machine failed. Carries exit code, signal, duration and bounded output tails.
 *
 * @example
 * ```ts
 * catch (e) { if (e instanceof CommandError) console.error(e.exitCode, e.stderrTail); }
 * ```
 */
export class CommandError extends RunctlError implements CommandFailure {
  readonly command: string;
  readonly host: string;
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly durationMs: number;
  readonly stdoutTail: string;
  readonly stderrTail: string;

  static {
    Object.defineProperty(this.prototype, COMMAND_ERROR_BRAND, { value: true });
  }

  /** Checks the brand, like {@link RunctlError}'s, so it holds across copies of runctl. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return this === CommandError ? hasBrand(value, COMMAND_ERROR_BRAND) : Function.prototype[Symbol.hasInstance].call(this, value);
  }

  constructor(
    failure: CommandFailure,
    options: RunctlErrorOptions & { code?: RunctlErrorCode | undefined; message?: string | undefined } = {},
  ) {
    const how = failure.exitCode !== null ? `exit code ${failure.exitCode}` : failure.signal ? `signal ${failure.signal}` : "a dropped connection";
    const tail = failure.stderrTail.trim() || failure.stdoutTail.trim();
    super(
      options.code ?? "COMMAND_FAILED",
      options.message ?? `Command on ${failure.host} failed with ${how} after ${failure.durationMs} ms: ${failure.command}${tail ? `\n${tail}` : ""}`,
      { ...options, details: { ...failure, ...options.details } },
    );
    this.name = "CommandError";
    this.command = failure.command;
    this.host = failure.host;
    this.exitCode = failure.exitCode;
    this.signal = failure.signal;
    this.durationMs = failure.durationMs;
    this.stdoutTail = failure.stdoutTail;
    this.stderrTail = failure.stderrTail;
  }
}

/**
 * Whether `value` is a {@link RunctlError} (or a subclass), from this copy of runctl or any other
 * loaded in the process. Exact: an object that merely has `code` and `retryable` is not one.
 */
export function isRunctlError(value: unknown): value is RunctlError {
  return hasBrand(value, RUNCTL_ERROR_BRAND);
}

/** Turns an AbortSignal's reason into a typed ABORTED error. */
export function abortError(signal: AbortSignal): RunctlError {
  return new RunctlError("ABORTED", "The operation was aborted.", { cause: signal.reason });
}

/** Throws ABORTED when the signal has fired. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}
