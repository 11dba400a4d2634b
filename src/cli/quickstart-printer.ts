import { createEventPrinter, type Checkpoint, type CheckpointVerification, type RunEvent } from "../index.js";
import { output, type CliIo } from "./cli-output.js";

/**
 * How `runctl quickstart` shows its run: `printEvent` for every event, `printRun` first and
 * `printResult` last. One object, so that another renderer (progress bars) can replace it whole.
 *
 * @example
 * ```ts
 * const printer = quickstartPrinter(io, false);
 * for await (const event of run) printer.printEvent(event);
 * ```
 */
export interface QuickstartPrinter {
  /** The run has an id (before any event). */
  printRun(runId: string, checkpointDir: string): void;
  /** One event of the run, as it comes. */
  printEvent(event: RunEvent): void;
  /** The end: the run's status and its latest checkpoint, verified byte for byte. */
  printResult(result: QuickstartResult): void;
}

/**
 * What `runctl quickstart` ends with (the last JSON line with `--json`, `type: "result"`).
 *
 * @example
 * ```ts
 * const result: QuickstartResult = { runId, status: "succeeded", latest, verification };
 * ```
 */
export interface QuickstartResult {
  /** The run. */
  readonly runId: string;
  /** How it ended (`succeeded`, `failed`, `canceled`, ...). */
  readonly status: string;
  /** Its newest committed checkpoint, if any. */
  readonly latest: Checkpoint | undefined;
  /** That checkpoint re-read and checked against its manifest's sha256s. */
  readonly verification: CheckpointVerification | undefined;
}

/**
 * The quickstart's printer: the lines examples/quickstart.ts prints (stdout), or with `json` one
 * JSON line per event with `schemaVersion: 1`.
 *
 * @param json - JSON lines instead of text.
 * @example
 * ```ts
 * quickstartPrinter(io, true).printEvent(event); // {"schemaVersion":1,"type":"metric",...}
 * ```
 */
export function quickstartPrinter(io: CliIo, json: boolean): QuickstartPrinter {
  const o = output(io);
  if (json) {
    return {
      printRun: (runId, checkpointDir) => o.json({ schemaVersion: 1, type: "run", runId, checkpointDir }),
      printEvent: (event) => o.json({ schemaVersion: 1, ...event }),
      printResult: ({ runId, status, latest, verification }) =>
        o.json({
          schemaVersion: 1,
          type: "result",
          runId,
          status,
          latest: latest ? { name: latest.name, step: latest.step, totalBytes: latest.totalBytes, files: latest.manifest.files.length } : null,
          verified: verification?.ok ?? false,
          ...(verification && !verification.ok ? { problems: verification.problems } : {}),
        }),
    };
  }
  // Transfers (sync, checkpoint commits) as progress bars on a terminal, plain lines otherwise.
  const printer = createEventPrinter(io.stdout, { render: quickstartLine });
  return {
    printRun: (runId, checkpointDir) => {
      printer.line(`run ${runId}`);
      printer.line(`  checkpoints in ${checkpointDir}`);
    },
    printEvent: (event) => printer.event(event),
    printResult: ({ latest, verification }) => {
      printer.close();
      if (latest && verification) {
        o.out(`latest checkpoint: ${latest.name} (step ${latest.step}, ${latest.totalBytes} bytes, ${latest.manifest.files.length} files) — ${verification.ok ? "sha256 verified" : `CORRUPT: ${JSON.stringify(verification.problems)}`}`);
      } else {
        o.out("no checkpoint was committed");
      }
    },
  };
}

/** The line examples/quickstart.ts prints for an event; undefined for those it does not show. */
function quickstartLine(event: RunEvent): string | undefined {
  switch (event.type) {
    case "phase":
      return `• ${event.phase}`;
    case "sync":
      return `  synced ${event.files} files (${event.uploadedFiles} sent) in ${event.durationMs} ms`;
    case "metric":
      return event.step !== undefined && event.step % 10 === 0 ? `  step ${event.step}  loss ${fmt(event.values["loss"])}  acc ${fmt(event.values["accuracy"])}` : undefined;
    case "checkpoint":
      return `  checkpoint ${event.name} committed (${event.files} files, ${event.bytes} bytes)`;
    case "warning":
      return `  warning: ${event.message}`;
    case "exit":
      return `• exit: ${event.status}${event.exitCode !== null ? ` (code ${event.exitCode})` : ""}${event.error ? ` — ${event.error.message}` : ""}`;
    default:
      return undefined;
  }
}

function fmt(value: unknown): string {
  return typeof value === "number" ? value.toFixed(4) : String(value);
}
