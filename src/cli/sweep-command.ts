import { output, table, type CliIo } from "./cli-output.js";
import { EXIT_CODES, type ExitCode } from "./cli-errors.js";
import { defaultSweep } from "./default-sweep.js";
import type { SweepResource } from "./sweep-report.js";

/**
 * Options of {@link sweepCommand}.
 *
 * @example
 * ```ts
 * const options: SweepCommandOptions = { dryRun: true, region: "us-east-1", owner: "all", json: false };
 * ```
 */
export interface SweepCommandOptions {
  /** Report only; delete nothing. @defaultValue false */
  readonly dryRun: boolean;
  /** Also sweep expired resources whose run looks alive. @defaultValue false */
  readonly force?: boolean | undefined;
  /** The region to sweep. @defaultValue undefined: every region in the local ledger, and AWS_REGION */
  readonly region: string | undefined;
  /** Whose resources: `all`, or undefined for the caller's own. @defaultValue undefined */
  readonly owner: string | undefined;
  /** One JSON document. @defaultValue false */
  readonly json: boolean;
}

/**
 * `runctl sweep`: deletes cloud resources runctl made that are no longer needed (or, with `dryRun`,
 * reports them), through `io.sweep` (the SDK's by default). Exit 1 when any deletion failed.
 *
 * @example
 * ```ts
 * const code = await sweepCommand({ dryRun: true, region: "us-east-1", owner: undefined, json: true }, io);
 * ```
 */
export async function sweepCommand(options: SweepCommandOptions, io: CliIo): Promise<ExitCode> {
  const o = output(io);
  const sweep = io.sweep ?? defaultSweep;
  const signal = io.signal ?? new AbortController().signal;
  if (!options.json) o.err(`runctl: sweeping${options.region ? ` ${options.region}` : ""}${options.owner ? ` (owner ${options.owner})` : ""}${options.force ? " (force: expired resources of runs that look alive too)" : ""}${options.dryRun ? " (dry run: nothing is deleted)" : ""}`);
  const report = await sweep({ region: options.region, dryRun: options.dryRun, force: options.force ?? false, owner: options.owner, signal });
  if (options.json) {
    o.json({ schemaVersion: 1, ...report });
  } else {
    const row = (r: SweepResource, note: string): string[] => [r.kind, r.id, r.runId || "-", r.owner || "-", note];
    const section = (title: string, rows: string[][], last: string): void => {
      o.out(`${title} (${rows.length})`);
      if (rows.length > 0) for (const line of table([["KIND", "ID", "RUN", "OWNER", last], ...rows])) o.out(`  ${line}`);
    };
    section(report.dryRun ? "WOULD DELETE" : "FOUND", report.found.map((r) => row(r, r.reason)), "REASON");
    if (!report.dryRun) section("DELETED", report.deleted.map((r) => row(r, r.reason)), "REASON");
    section("KEPT", report.kept.map((k) => row(k.resource, k.reason)), "WHY KEPT");
    if (report.errors.length > 0) section("ERRORS", report.errors.map((e) => row(e.resource, e.message)), "ERROR");
  }
  if (report.errors.length > 0) {
    if (!options.json) o.err(`runctl: ${report.errors.length} resources could not be deleted`);
    return EXIT_CODES.failed;
  }
  return EXIT_CODES.ok;
}
