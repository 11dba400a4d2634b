import { formatBytes } from "../util/format-bytes.js";
import { formatDuration } from "../util/format-duration.js";
import { formatUsd } from "../util/format-usd.js";
import type { ProgressEvent, RunEvent } from "./events.js";

/**
 * One event for people, as `runctl attach` prints it; undefined for events it does not show (the
 * raw `RUNCTL_METRIC` log line, shown as its `metric` event instead). A `progress` event becomes a
 * plain line; {@link createEventPrinter} draws it as a bar on a terminal instead.
 *
 * @example
 * ```ts
 * renderEvent({ type: "phase", phase: "training", seq: 3, time: "", runId: "r" }); // "• training"
 * ```
 */
export function renderEvent(event: RunEvent): string | undefined {
  switch (event.type) {
    case "phase":
      return `• ${event.phase}${event.job !== undefined ? ` (job ${event.job}${event.reason ? `: ${event.reason}` : ""})` : ""}`;
    case "log":
      return event.line.startsWith("RUNCTL_METRIC ") ? undefined : event.line;
    case "metric":
      return `  metric${event.step !== undefined ? ` step ${event.step}` : ""}: ${Object.entries(event.values)
        .filter(([key]) => key !== "step")
        .map(([key, value]) => `${key}=${typeof value === "number" && !Number.isInteger(value) ? value.toFixed(4) : JSON.stringify(value)}`)
        .join(" ")}`;
    case "sync":
      return `  synced ${event.files} files (${event.uploadedFiles} sent, ${formatBytes(event.uploadedBytes)}; ${event.deletedFiles} deleted) in ${formatDuration(event.durationMs)}`;
    case "setup":
      return `  venv ${event.venv} ${event.reused ? "reused" : "created"} in ${formatDuration(event.durationMs)}`;
    case "resumed":
      return `  resumed from ${event.name}${event.step !== null ? ` (step ${event.step})` : ""} of run ${event.fromRunId}`;
    case "checkpoint":
      return `  checkpoint ${event.name} committed (${[...(event.step !== null ? [`step ${event.step}`] : []), `${event.files} files`, formatBytes(event.bytes)].join(", ")})`;
    case "progress":
      return `  ${renderProgress(event)}`;
    case "outputs":
      return `  outputs uploaded: ${event.files} files, ${formatBytes(event.bytes)} to ${event.location}`;
    case "interruption":
      return `! interruption: ${event.reason}`;
    case "recovered":
      return `• recovered (attempt ${event.attempt})${event.fromCheckpoint ? ` from ${event.fromCheckpoint}` : " from scratch"}`;
    case "cost":
      return `  cost so far ${formatUsd(event.usd)} (${formatUsd(event.hourlyUsd)}/h)`;
    case "warning":
      return `! warning${event.code ? ` [${event.code}]` : ""}: ${event.message}`;
    case "exit":
      return `• exit: ${event.status}${event.exitCode !== null ? ` (code ${event.exitCode})` : ""}${event.signal ? ` by ${event.signal}` : ""} after ${formatDuration(event.durationMs)}${event.error ? ` — ${event.error.code}: ${event.error.message}` : ""}`;
  }
}

/**
 * A progress event as one plain line: `sync 12.0 MiB / 50.0 MiB (24%)`, with the checkpoint's
 * name (`checkpoint step-20 ...`) and the node where there is one.
 *
 * @example
 * ```ts
 * renderProgress({ type: "progress", phase: "sync", bytesDone: 1024, bytesTotal: 4096, seq: 4, time: "", runId: "r" });
 * // "sync 1.0 KiB / 4.0 KiB (25%)"
 * ```
 */
export function renderProgress(event: ProgressEvent): string {
  return `${progressLabel(event)} ${formatBytes(event.bytesDone)} / ${formatBytes(event.bytesTotal)} (${progressPercent(event)}%)`;
}

/** What a progress event is about: `sync`, `checkpoint step-20`, `output [node 1]`. */
export function progressLabel(event: ProgressEvent): string {
  const name = event.phase === "checkpoint" && event.name !== undefined ? ` ${event.name}` : "";
  return `${event.phase}${name}${event.node !== undefined ? ` [node ${event.node}]` : ""}`;
}

/** Whole percent done, 100 for an empty transfer. */
export function progressPercent(event: ProgressEvent): number {
  return event.bytesTotal > 0 ? Math.min(100, Math.floor((event.bytesDone / event.bytesTotal) * 100)) : 100;
}
