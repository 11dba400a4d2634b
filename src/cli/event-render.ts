import type { RunEvent } from "../index.js";
import { formatBytes, formatDuration, formatUsd } from "./cli-output.js";

/**
 * One event for people, as `runctl attach` prints it; undefined for events it does not show (the
 * raw `RUNCTL_METRIC` log line, shown as its `metric` event instead).
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
