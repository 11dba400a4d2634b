import type { SweepFn } from "./sweep-report.js";

/**
 * Where the CLI writes: anything with `write(string)` (process streams, or a test's capture).
 *
 * @example
 * ```ts
 * let text = "";
 * const capture: CliStream = { write: (chunk) => (text += chunk) };
 * ```
 */
export interface CliStream {
  /** Writes text as is (the CLI adds its own newlines). */
  write(chunk: string): unknown;
  /** A terminal: `attach` and `logs -f` draw progress bars on it. @defaultValue false */
  readonly isTTY?: boolean | undefined;
}

/**
 * The CLI's world: its streams, its stop signal and its injectable services. `runCli` touches
 * nothing else of the process (no `process.exit`, no `process.stdout`), so tests run it in-process.
 *
 * @example
 * ```ts
 * const out: string[] = [];
 * const code = await runCli(["ls", "--json"], { stdout: { write: (s) => out.push(s) }, stderr: process.stderr });
 * ```
 */
export interface CliIo {
  /** Data: tables, log lines, one JSON document (or JSON lines for streams). */
  readonly stdout: CliStream;
  /** People: progress, hints, warnings, errors (without `--json`). */
  readonly stderr: CliStream;
  /** Stops the command (wired to SIGINT by the bin); a followed run is detached, never stopped. @defaultValue never fires */
  readonly signal?: AbortSignal | undefined;
  /** The folder relative paths (`plan FILE`) resolve against. @defaultValue `process.cwd()` */
  readonly cwd?: string | undefined;
  /** The sweep implementation (tests inject a fake). @defaultValue `defaultSweep`, the SDK's */
  readonly sweep?: SweepFn | undefined;
  /** The clock for ages and running durations. @defaultValue `() => new Date()` */
  readonly now?: (() => Date) | undefined;
}

/**
 * Writers bound to a {@link CliIo}: `out` for data lines, `json` for one JSON document or line,
 * `err` for human messages.
 *
 * @example
 * ```ts
 * const o = output(io); o.out("hello"); o.json({ ok: true }); o.err("note");
 * ```
 */
export function output(io: CliIo): { out(line: string): void; json(value: unknown): void; err(line: string): void } {
  return {
    out: (line) => void io.stdout.write(`${line}\n`),
    json: (value) => void io.stdout.write(`${JSON.stringify(value)}\n`),
    err: (line) => void io.stderr.write(`${line}\n`),
  };
}

/**
 * Lays out rows as left-aligned columns separated by two spaces (the last column is not padded).
 *
 * @example
 * ```ts
 * table([["RUN", "STATUS"], ["r1", "succeeded"]]); // ["RUN  STATUS", "r1   succeeded"]
 * ```
 */
export function table(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join("  ").trimEnd());
}

/**
 * A local timestamp for tables: `2026-11-21 15:21:17` (UTC offset dropped; ISO in JSON output).
 *
 * @example
 * ```ts
 * formatTime("2026-11-21T15:21:17.000Z");
 * ```
 */
export function formatTime(iso: string | undefined): string {
  if (!iso) return "-";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "-";
  const pad = (n: number): string => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}
