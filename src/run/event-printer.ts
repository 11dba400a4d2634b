import { formatBytes } from "../util/format-bytes.js";
import type { ProgressEvent, RunEvent } from "./events.js";
import { progressLabel, progressPercent, renderEvent, renderProgress } from "./render-event.js";

/**
 * Where a printer writes: `process.stdout`, `process.stderr`, or anything with `write`.
 *
 * @defaultValue none (`write` is required; `isTTY` absent means not a terminal)
 * @example
 * ```ts
 * let text = "";
 * const stream: EventPrinterStream = { write: (chunk) => (text += chunk), isTTY: false };
 * ```
 */
export interface EventPrinterStream {
  /** Writes text as is (the printer adds its own newlines). */
  write(chunk: string): unknown;
  /** A terminal: progress is drawn as bars updated in place (`\r`) instead of lines. */
  readonly isTTY?: boolean | undefined;
}

/**
 * Options of {@link createEventPrinter}.
 *
 * @defaultValue every field is optional; see each
 * @example
 * ```ts
 * const options: EventPrinterOptions = { render: (e) => (e.type === "log" ? e.line : undefined) };
 * ```
 */
export interface EventPrinterOptions {
  /**
   * Text for an event other than `progress` (one or more lines, without the final newline), or
   * undefined to skip it. @defaultValue the line `runctl attach` prints
   */
  readonly render?: ((event: RunEvent) => string | undefined) | undefined;
  /** Draw progress as bars. @defaultValue `stream.isTTY === true` */
  readonly tty?: boolean | undefined;
  /** Show `progress` events at all. @defaultValue true */
  readonly progress?: boolean | undefined;
  /**
   * Off a terminal, at most one progress line per transfer this often, by the events' `time`; a
   * transfer that takes less prints no line, one that takes longer ends with its 100% line.
   * @defaultValue 1000
   */
  readonly lineIntervalMs?: number | undefined;
}

/**
 * Prints a run's events for people; see {@link createEventPrinter}.
 *
 * @defaultValue none (made by {@link createEventPrinter})
 * @example
 * ```ts
 * const printer: EventPrinter = createEventPrinter(process.stdout);
 * printer.line("starting");
 * ```
 */
export interface EventPrinter {
  /** Prints one event (a `progress` event as a bar or a throttled line; others through `render`). */
  event(event: RunEvent): void;
  /** Prints a line of your own, above an open progress bar. */
  line(text: string): void;
  /** Ends an open progress bar's line. Call it once the run is over; the printer stays usable. */
  close(): void;
}

const BAR_WIDTH = 24;

/**
 * A printer of run events for people: each event as a line (`• training`, `  checkpoint step-20
 * committed (...)`), and `progress` events (sync, data download, checkpoint commit, output upload)
 * as one bar per transfer updated in place on a terminal (`stream.isTTY`), or as plain lines
 * (`sync 12.0 MiB / 50.0 MiB (24%)`, at most one a second per transfer, none for a transfer done
 * within a second) elsewhere, so logs and CI output stay readable.
 *
 * @defaultValue options: render = the `runctl attach` line, tty = `stream.isTTY`, progress = true
 * @example
 * ```ts
 * const printer = createEventPrinter(process.stdout);
 * for await (const event of run) printer.event(event);
 * printer.close();
 * ```
 */
export function createEventPrinter(stream: EventPrinterStream, options: EventPrinterOptions = {}): EventPrinter {
  const render = options.render ?? renderEvent;
  const tty = options.tty ?? stream.isTTY === true;
  const showProgress = options.progress ?? true;
  const lineIntervalMs = options.lineIntervalMs ?? 1000;
  // The bar on the terminal's last line, redrawn below any line printed while it is open.
  let bar: string | undefined;
  // Off a terminal: per transfer, when it last printed; dropped at its end (a checkpoint name comes back).
  const transfers = new Map<string, { lastAt: number; printed: boolean }>();

  const print = (text: string): void => {
    if (bar === undefined) stream.write(`${text}\n`);
    else stream.write(`\r\x1b[K${text}\n${bar}`);
  };

  const progress = (event: ProgressEvent): void => {
    const final = event.bytesDone >= event.bytesTotal;
    if (tty) {
      const text = drawBar(event);
      stream.write(`\r\x1b[K${text}${final ? "\n" : ""}`);
      bar = final ? undefined : text;
      return;
    }
    // Timed by the events' own clock, so a replay (`runctl attach` of a finished run) prints what a
    // live follower printed. A transfer done within lineIntervalMs prints nothing: the event that
    // follows it (`sync`, `checkpoint`, `outputs`) says it is done.
    const key = progressLabel(event);
    const at = Date.parse(event.time);
    const t = Number.isNaN(at) ? Date.now() : at;
    const state = transfers.get(key) ?? { lastAt: t, printed: false };
    transfers.set(key, state);
    if (final) {
      if (state.printed) print(`  ${renderProgress(event)}`);
      transfers.delete(key);
    } else if (t - state.lastAt >= lineIntervalMs) {
      print(`  ${renderProgress(event)}`);
      state.lastAt = t;
      state.printed = true;
    }
  };

  return {
    event(event) {
      if (event.type === "progress") {
        if (showProgress) progress(event);
        return;
      }
      const text = render(event);
      if (text !== undefined) print(text);
    },
    line(text) {
      print(text);
    },
    close() {
      if (bar !== undefined) stream.write("\n");
      bar = undefined;
    },
  };
}

/** `sync [#########---------------]  37%  18.5 MiB / 50.0 MiB` */
function drawBar(event: ProgressEvent): string {
  const percent = progressPercent(event);
  const filled = Math.round((percent / 100) * BAR_WIDTH);
  return `${progressLabel(event)} [${"#".repeat(filled)}${"-".repeat(BAR_WIDTH - filled)}] ${String(percent).padStart(3)}%  ${formatBytes(event.bytesDone)} / ${formatBytes(event.bytesTotal)}`;
}
