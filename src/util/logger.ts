/** How much a log entry matters. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** What wrote a log entry. */
export type LogSource = "transport" | "provider" | "agent" | "engine";

/**
 * One line of runctl's debug output. Never carries a secret: commands are logged by their argv
 * (secrets travel on stdin), environments by their variable names only, never values, and SSH
 * credentials not at all.
 *
 * @defaultValue none (`details` is absent when there is nothing more to say)
 * @example
 * ```ts
 * const entry: LogEntry = { level: "debug", source: "transport", message: "ssh gpu-1: exec python3 -V" };
 * ```
 */
export interface LogEntry {
  /** How much it matters. */
  readonly level: LogLevel;
  /** What wrote it. */
  readonly source: LogSource;
  /** The line, for people, starting with what it concerns (`ssh me@gpu-1:22: connected in 84 ms`). */
  readonly message: string;
  /** Facts for machines (a command's exit code and duration, a file's size). */
  readonly details?: Readonly<Record<string, unknown>> | undefined;
}

/**
 * Methods per level in the style of the AWS SDK's `logger` (so `console` fits): each gets the line
 * (`[runctl transport] ...`) and the entry. A missing method drops its level.
 *
 * @defaultValue none (each method is optional)
 * @example
 * ```ts
 * const methods: LoggerMethods = { debug: (line) => console.error(line), warn: (line) => console.warn(line) };
 * ```
 */
export interface LoggerMethods {
  /** Each step of transports, providers and the agent. */
  readonly debug?: ((line: string, entry: LogEntry) => void) | undefined;
  /** Milestones (a machine leased or released). */
  readonly info?: ((line: string, entry: LogEntry) => void) | undefined;
  /** Something odd that runctl works around. */
  readonly warn?: ((line: string, entry: LogEntry) => void) | undefined;
  /** A step that failed. */
  readonly error?: ((line: string, entry: LogEntry) => void) | undefined;
}

/**
 * The `logger` option of the providers (`local`, `sshHosts`, `slurm`, `ec2`) and of `sshTransport`:
 * methods per level ({@link LoggerMethods}, `console` works), or one function that gets every
 * {@link LogEntry} (kysely's `log` style). Without one, runctl logs nothing.
 *
 * @defaultValue undefined (silent)
 * @example
 * ```ts
 * const provider = local({ logger: (entry: LogEntry) => console.error(entry.level, entry.source, entry.message) });
 * ```
 */
export type RunctlLogger = LoggerMethods | ((entry: LogEntry) => void);

/**
 * A logger bound to its source, used inside runctl; its methods do nothing without a user logger.
 *
 * @example
 * ```ts
 * const log = sourceLogger(options.logger, "transport");
 * log.debug(`ssh ${host}: connected`, { durationMs: 84 });
 * ```
 */
export interface SourceLogger {
  /** Whether a user logger receives anything (skip building costly messages when not). */
  readonly enabled: boolean;
  /** Logs at `debug`. */
  debug(message: string, details?: Readonly<Record<string, unknown>>): void;
  /** Logs at `info`. */
  info(message: string, details?: Readonly<Record<string, unknown>>): void;
  /** Logs at `warn`. */
  warn(message: string, details?: Readonly<Record<string, unknown>>): void;
  /** Logs at `error`. */
  error(message: string, details?: Readonly<Record<string, unknown>>): void;
}

/**
 * The user's logger for one source. A logger that throws never breaks a run: its error is dropped.
 *
 * @example
 * ```ts
 * sourceLogger(console, "provider").info("leased gpu-1");
 * ```
 */
export function sourceLogger(logger: RunctlLogger | undefined, source: LogSource): SourceLogger {
  const write = (level: LogLevel, message: string, details?: Readonly<Record<string, unknown>>): void => {
    if (logger === undefined) return;
    const entry: LogEntry = details === undefined ? { level, source, message } : { level, source, message, details };
    try {
      if (typeof logger === "function") logger(entry);
      else logger[level]?.(`[runctl ${source}] ${message}`, entry);
    } catch {
      // Debug output is advisory: a failing logger must not fail the step it describes.
    }
  };
  return {
    enabled: logger !== undefined,
    debug: (message, details) => write("debug", message, details),
    info: (message, details) => write("info", message, details),
    warn: (message, details) => write("warn", message, details),
    error: (message, details) => write("error", message, details),
  };
}
