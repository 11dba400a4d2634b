import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import type { RunRecord } from "../run/journal.js";
import { runctlHome } from "../util/runctl-home.js";
// Not from the root entry, which would load the whole SDK with `runctl ls` (bench/startup.ts).
import { RunctlError } from "../errors/index.js";
import type { ExitEvent, RunEvent } from "../run/events.js";
import { processAlive } from "../util/process-alive.js";

/**
 * How a run stands, as far as its local journal tells: how it ended, `running` while a client
 * follows it, `unknown` when no client follows it and it has not ended (its client died; attaching
 * finds out).
 *
 * @example
 * ```ts
 * if (readRunJournal(runId).status === "running") console.log("still going");
 * ```
 */
export type JournalStatus = "running" | "succeeded" | "failed" | "canceled" | "interrupted" | "unknown";

/**
 * What the SDK records in `$RUNCTL_HOME/runs/<runId>/run.json` (the fields the CLI reads).
 *
 * @example
 * ```ts
 * const { provider, script } = readRunJournal(runId).record;
 * ```
 */
export type StoredRunRecord = RunRecord;

/**
 * One run's journal, read once.
 *
 * @example
 * ```ts
 * const view: RunJournalView = readRunJournal(runId);
 * const lines = view.events.flatMap((e) => (e.type === "log" ? [e.line] : []));
 * ```
 */
export interface RunJournalView {
  /** Its `run.json`. */
  readonly record: StoredRunRecord;
  /** Every journaled event, in `seq` order (a torn last line is dropped). */
  readonly events: readonly RunEvent[];
  /** The `exit` event, when the run has ended. */
  readonly exit: ExitEvent | undefined;
  /** See {@link JournalStatus}. */
  readonly status: JournalStatus;
}

/**
 * A row of `runctl ls`.
 *
 * @example
 * ```ts
 * const newest: RunListing | undefined = listRunJournals()[0];
 * ```
 */
export interface RunListing {
  /** The run's id. */
  readonly runId: string;
  /** The provider's name. */
  readonly provider: string;
  /** The training script. */
  readonly script: string;
  /** When it was created (ISO 8601). */
  readonly createdAt: string;
  /** See {@link JournalStatus}. */
  readonly status: JournalStatus;
  /** Wall time: the exit's, or so far for a running run; null when unknown. */
  readonly durationMs: number | null;
  /** Restarts on new machines. */
  readonly restarts: number;
  /** Cost in US dollars; null when the run reported none. */
  readonly costUsd: number | null;
  /** The machine it ran on, when one was provisioned. */
  readonly machine: { readonly provider: string; readonly id: string } | null;
}

/** runctl's local folder: the SDK's own {@link runctlHome} (`RUNCTL_HOME`, else `~/.runctl`). */
export const runctlHomeDir = runctlHome;

/**
 * Reads one run's journal without touching it (no writer claimed, nothing followed). Throws
 * RUN_NOT_FOUND (exit code 3) for an unknown id.
 *
 * @example
 * ```ts
 * const { record, events, status } = readRunJournal("20261121-152117-utfo5u");
 * ```
 */
export function readRunJournal(runId: string): RunJournalView {
  const dir = join(runctlHomeDir(), "runs", runId);
  const recordPath = join(dir, "run.json");
  if (!existsSync(recordPath)) {
    throw new RunctlError("RUN_NOT_FOUND", `No run ${runId} in ${join(runctlHomeDir(), "runs")}; set RUNCTL_HOME to the folder the run was started with.`);
  }
  const record = JSON.parse(readFileSync(recordPath, "utf8")) as StoredRunRecord;
  const events = readEvents(join(dir, "journal.jsonl"));
  const exit = findLast(events, (e): e is ExitEvent => e.type === "exit");
  const status: JournalStatus = exit ? endStatus(exit.status) : writerAlive(join(dir, "writer.pid")) ? "running" : "unknown";
  return { record, events, exit, status };
}

/**
 * Every run in `$RUNCTL_HOME/runs`, newest first. Folders that are not runs (no `run.json`, or
 * unreadable) are skipped.
 *
 * @param now - The clock, for the duration of running runs. @defaultValue `new Date()`
 * @example
 * ```ts
 * for (const run of listRunJournals()) console.log(run.runId, run.status);
 * ```
 */
export function listRunJournals(now: Date = new Date()): RunListing[] {
  const runsDir = join(runctlHomeDir(), "runs");
  let names: string[];
  try {
    names = readdirSync(runsDir);
  } catch {
    return [];
  }
  const rows: RunListing[] = [];
  for (const name of names) {
    let view: RunJournalView;
    try {
      view = readRunJournal(name);
    } catch {
      continue;
    }
    rows.push(listing(view, now));
  }
  // Newest first; run ids start with the creation time, so they break ties the same way.
  return rows.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.runId.localeCompare(a.runId));
}

function listing(view: RunJournalView, now: Date): RunListing {
  const { record, events, exit, status } = view;
  const created = Date.parse(record.createdAt);
  const durationMs = exit ? exit.durationMs : status === "running" && Number.isFinite(created) ? Math.max(0, now.getTime() - created) : null;
  return {
    runId: record.runId,
    provider: record.provider,
    script: record.script,
    createdAt: record.createdAt,
    status,
    durationMs,
    restarts: exit?.restarts ?? events.filter((e) => e.type === "recovered").length,
    costUsd: costOf(events),
    machine: record.machine ? { provider: record.machine.provider, id: record.machine.id } : null,
  };
}

/** The run's cost: its last `cost` event (the SDK emits a final one when a priced machine is released). */
function costOf(events: readonly RunEvent[]): number | null {
  const last = findLast(events, (e) => e.type === "cost");
  return last?.type === "cost" ? last.usd : null;
}

function endStatus(status: ExitEvent["status"]): JournalStatus {
  return status === "detached" ? "unknown" : status;
}

function readEvents(path: string): RunEvent[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return [];
  }
  const events: RunEvent[] = [];
  for (const raw of text.split("\n")) {
    if (raw === "") continue;
    try {
      events.push((JSON.parse(raw) as { e: RunEvent }).e);
    } catch {
      break; // A torn last line from a crash, as the SDK's reader does.
    }
  }
  return events;
}

/** Whether the process that follows the run (its journal's writer) is alive. */
function writerAlive(path: string): boolean {
  let pid: number;
  try {
    pid = Number(readFileSync(path, "utf8").trim());
  } catch {
    return false;
  }
  return processAlive(pid);
}

function findLast<T, S extends T>(items: readonly T[], test: ((item: T) => item is S) | ((item: T) => boolean)): S | undefined {
  for (let i = items.length - 1; i >= 0; i--) {
    const item = items[i] as T;
    if (test(item)) return item as S;
  }
  return undefined;
}
