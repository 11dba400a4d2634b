import { Runctl, listRecordedResources, RunctlError } from "../index.js";
import { ec2 } from "../aws-entry.js";
import type { SweepFn, SweepReport } from "./sweep-report.js";

/**
 * The sweep `runctl sweep` runs: `Runctl.sweep` on EC2 in the region given, else in every region
 * the local ledger has resources in (and `AWS_REGION`), with the reports merged.
 *
 * @defaultValue the sweep `runCli` uses when `io.sweep` is not given
 * @example
 * ```ts
 * const report = await defaultSweep({ region: "us-east-1", dryRun: true, force: false, owner: undefined, signal });
 * ```
 */
export const defaultSweep: SweepFn = async ({ region, dryRun, force, owner, signal }) => {
  const fromEnv = process.env["AWS_REGION"] ?? process.env["AWS_DEFAULT_REGION"];
  const regions = region
    ? [region]
    : [...new Set([...listRecordedResources({ includeDeleted: false }).flatMap((r) => (r.provider === "ec2" && r.region ? [r.region] : [])), ...(fromEnv ? [fromEnv] : [])])];
  if (regions.length === 0) throw new RunctlError("INVALID_ARGUMENT", "runctl sweep: no region to sweep (none in the local ledger, no AWS_REGION); pass --region.");
  const reports: SweepReport[] = [];
  for (const r of regions) {
    // The instance type only matters for launching; sweeping reads tags.
    reports.push(await Runctl.sweep({ provider: ec2({ region: r, instanceType: "t3.micro" }), dryRun, force, owner, signal }));
  }
  return {
    dryRun,
    found: reports.flatMap((x) => x.found),
    deleted: reports.flatMap((x) => x.deleted),
    kept: reports.flatMap((x) => x.kept),
    errors: reports.flatMap((x) => x.errors),
  };
};
