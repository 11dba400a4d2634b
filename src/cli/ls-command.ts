// Not from the root entry: `runctl ls` loads the ledger and the journals only, not the SDK (bench/startup.ts).
import { listRecordedResources } from "../ledger/index.js";
import { output, table, formatTime, type CliIo } from "./cli-output.js";
import { formatDuration } from "../util/format-duration.js";
import { formatUsd } from "../util/format-usd.js";
import { EXIT_CODES, CliError, type ExitCode } from "./cli-errors.js";
import { listRunJournals, runctlHomeDir } from "./run-journals.js";

/**
 * A cloud resource row of `runctl ls`.
 *
 * @example
 * ```ts
 * const { resources } = JSON.parse(stdout) as { resources: ResourceListing[] };
 * ```
 */
export interface ResourceListing {
  /** What it is (`instance`, `volume`, ...). */
  readonly kind: string;
  /** The cloud's id. */
  readonly id: string;
  /** The provider that made it. */
  readonly provider: string;
  /** Its region; null when it has none. */
  readonly region: string | null;
  /** The run it was made for; null for resources made outside a run. */
  readonly runId: string | null;
  /** When it was created (ISO 8601). */
  readonly createdAt: string;
  /** Milliseconds since it was created. */
  readonly ageMs: number;
  /** When it may be swept (ISO 8601); null when never (persistent) or unknown. */
  readonly expiresAt: string | null;
  /** Kept beyond its run; never swept. */
  readonly persistent: boolean;
}

/**
 * `runctl ls`: runs in `$RUNCTL_HOME/runs` (newest first) and the ledger's live cloud resources.
 *
 * @example
 * ```ts
 * const code = await lsCommand({ json: true }, io);
 * ```
 */
export async function lsCommand(options: { readonly json: boolean }, io: CliIo): Promise<ExitCode> {
  if (io.signal?.aborted) throw new CliError("ABORTED", "Interrupted.", EXIT_CODES.interrupted);
  const now = io.now?.() ?? new Date();
  const runs = listRunJournals(now);
  // The ledger is local state too; the cloud's own truth is what `runctl sweep --dry-run` reports.
  const resources: ResourceListing[] = listRecordedResources()
    .map((r) => ({
      kind: r.kind,
      id: r.id,
      provider: r.provider,
      region: r.region ?? null,
      runId: r.runId ?? null,
      createdAt: r.createdAt,
      ageMs: Math.max(0, now.getTime() - Date.parse(r.createdAt)),
      expiresAt: r.expiresAt ?? null,
      persistent: r.persistent === true,
    }))
    .sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  const o = output(io);
  if (options.json) {
    o.json({ schemaVersion: 1, home: runctlHomeDir(), runs, resources });
    return EXIT_CODES.ok;
  }
  if (runs.length === 0) o.err(`runctl: no runs in ${runctlHomeDir()}/runs`);
  const runRows = runs.map((r) => [r.runId, r.provider, r.script, formatTime(r.createdAt), r.status, r.durationMs === null ? "-" : formatDuration(r.durationMs), String(r.restarts), formatUsd(r.costUsd)]);
  for (const line of table([["RUN", "PROVIDER", "SCRIPT", "CREATED", "STATUS", "DURATION", "RESTARTS", "COST"], ...runRows])) o.out(line);
  if (resources.length > 0) {
    o.out("");
    const resourceRows = resources.map((r) => [r.kind, r.id, r.region ?? "-", r.runId ?? "-", formatDuration(r.ageMs), r.persistent ? "never (persistent)" : expiry(r.expiresAt, now)]);
    for (const line of table([["RESOURCE", "ID", "REGION", "RUN", "AGE", "EXPIRES"], ...resourceRows])) o.out(line);
  }
  return EXIT_CODES.ok;
}

function expiry(expiresAt: string | null, now: Date): string {
  if (expiresAt === null) return "-";
  const left = Date.parse(expiresAt) - now.getTime();
  if (!Number.isFinite(left)) return "-";
  return left <= 0 ? `expired ${formatDuration(-left)} ago` : `in ${formatDuration(left)}`;
}
