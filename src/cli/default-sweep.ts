import { Runctl, listRecordedResources, slurm } from "../index.js";
import { UsageError } from "./cli-errors.js";
import type { SweepFn, SweepReport } from "./sweep-report.js";

/**
 * The sweep `runctl sweep` runs: `Runctl.sweep` on EC2 in the region given, else in every region
 * the local ledger has resources in (and `AWS_REGION`), plus every Slurm login node the ledger has
 * jobs of (runctl's own jobs whose run is over are cancelled), with the reports merged.
 *
 * @defaultValue the sweep `runCli` uses when `io.sweep` is not given
 * @example
 * ```ts
 * const report = await defaultSweep({ region: "us-east-1", dryRun: true, force: false, owner: undefined, signal });
 * ```
 */
export const defaultSweep: SweepFn = async ({ region, dryRun, force, owner, signal }) => {
  const fromEnv = process.env["AWS_REGION"] ?? process.env["AWS_DEFAULT_REGION"];
  const recorded = listRecordedResources({ includeDeleted: false });
  const regions = region ? [region] : [...new Set([...recorded.flatMap((r) => (r.provider === "ec2" && r.region ? [r.region] : [])), ...(fromEnv ? [fromEnv] : [])])];
  // Slurm jobs are swept through the login node they were submitted on (its facts are in the ledger).
  const logins = region ? [] : [...new Map(recorded.filter((r) => r.kind === "job" && r.provider === "slurm" && r.tags["slurm:login"]).map((r) => [r.tags["slurm:login"]!, r.tags])).values()];
  if (regions.length === 0 && logins.length === 0) throw new UsageError("sweep: no region to sweep (none in the local ledger, no AWS_REGION) and no Slurm jobs in the ledger; pass --region.");
  const reports: SweepReport[] = [];
  if (regions.length > 0) {
    // The AWS SDK loads only when there is a region to sweep, not with the CLI.
    const { ec2 } = await import("../aws-entry.js");
    for (const r of regions) {
      // The instance type only matters for launching; sweeping reads tags.
      reports.push(await Runctl.sweep({ provider: ec2({ region: r, instanceType: "t3.micro" }), dryRun, force, owner, signal }));
    }
  }
  for (const tags of logins) {
    const str = (k: string): string | undefined => tags[k];
    const login = {
      host: str("slurm:host") ?? "",
      port: Number(str("slurm:port") ?? 22),
      ...(str("slurm:username") ? { username: str("slurm:username") } : {}),
      ...(str("slurm:private-key-path") ? { privateKeyPath: str("slurm:private-key-path") } : {}),
      ...(str("slurm:known-hosts-path") ? { knownHostsPath: str("slurm:known-hosts-path") } : {}),
    };
    reports.push(await Runctl.sweep({ provider: slurm({ login, ...(str("slurm:root") ? { workdir: str("slurm:root") } : {}) }), dryRun, force, owner, signal }));
  }
  return {
    dryRun,
    found: reports.flatMap((x) => x.found),
    deleted: reports.flatMap((x) => x.deleted),
    kept: reports.flatMap((x) => x.kept),
    errors: reports.flatMap((x) => x.errors),
  };
};
