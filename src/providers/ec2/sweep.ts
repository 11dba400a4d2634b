import type { SweepReport } from "../sweep-types.js";
import type { SweepEc2Options } from "./sweep-options.js";
import { openSweepSession } from "./sweep-session.js";
import { describeRunctlResources } from "./sweep-describe.js";
import { judgeResources } from "./sweep-judge.js";
import {
  deleteSweptKeyPairs,
  deleteSweptSecurityGroups,
  deleteSweptSnapshots,
  deleteSweptStagingFolders,
  deleteSweptVolumes,
  terminateSweptInstances,
} from "./sweep-delete.js";

export type { SweepEc2Options, SweepTiming } from "./sweep-options.js";

/**
 * Finds and deletes runctl's leftovers in one EC2 region (and the SSM staging folders of
 * `staging`): instances, EBS volumes and snapshots, key pairs, security groups and
 * `runctl-staging/<scope>/` prefixes whose run is over or whose `runctl:expires-at` has passed.
 *
 * Rules (see `judge` in sweep-rules.ts):
 * - Only resources with runctl's full tag set (`runctl:run-id`, `runctl:owner`,
 *   `runctl:created-at`, in the formats runctl writes) are ever touched: the Describe calls
 *   filter on the `runctl:run-id` tag key server-side, and every result is checked again here.
 *   Other resources never appear in the report and no call names them. Staging folders count
 *   only with a `_runctl.json` marker; snapshots only the account's own.
 * - Owner scope: by default only resources whose `runctl:owner` is this process's `user@host`;
 *   `owner: "all"` widens to everyone. Others are reported as kept.
 * - `runctl:persistent=true` is never swept, nor a snapshot of a persistent volume.
 * - A live run is never swept: while an instance of the run is pending, running or stopping and
 *   the run is not known to be over, the instance and the run's other resources are kept, even
 *   past `runctl:expires-at` (reported with the reason); `force` sweeps such expired resources.
 * - Swept when the run is over (`runEnded(runId) === true`; not snapshots), or when
 *   `runctl:expires-at` has passed (a stopped instance, or a resource whose run has no live
 *   instance). A volume, key pair, security group or staging folder with no live instance is
 *   also swept once older than `graceMs` from `runctl:created-at` (the grace protects a run that
 *   is still launching).
 *
 * Order: terminate instances, then wait (bounded) until they are shutting-down/terminated; delete
 * volumes (one attached to a swept instance is retried until it comes free, within
 * `timing.volumeWaitMs`; one attached to any other instance is kept); delete snapshots; delete
 * security groups (`DependencyViolation` while a network interface lingers: repeated with
 * backoff, then kept as "in use"); delete key pairs, staging folders (marker last). Each deletion is recorded in
 * the resource ledger. `dryRun` makes no mutating call and reports the same `found` and `kept`.
 *
 * @returns What was found, deleted, kept (with reasons) and what failed.
 * @throws RunctlError INVALID_ARGUMENT for bad options; CLOUD_ERROR when a Describe call fails
 *   (nothing is deleted without the full picture); ABORTED.
 *
 * @example
 * ```ts
 * const report = await sweepEc2({ region: "us-east-1", owner: "all", dryRun: true });
 * for (const r of report.found) console.log(r.kind, r.id, r.reason);
 * ```
 */
export async function sweepEc2(options: SweepEc2Options): Promise<SweepReport> {
  const s = openSweepSession(options);
  const c = await judgeResources(s, await describeRunctlResources(s), options.staging ?? []);
  const report = (): SweepReport => ({ dryRun: s.dryRun, found: s.found, deleted: s.deleted, kept: s.kept, errors: s.errors });
  if (s.dryRun) return report();
  await terminateSweptInstances(s, c.sweptInstances);
  await deleteSweptVolumes(s, c.volumeCandidates);
  await deleteSweptSnapshots(s, c.snapshotCandidates);
  await deleteSweptSecurityGroups(s, c.groupCandidates);
  await deleteSweptKeyPairs(s, c.keyCandidates);
  await deleteSweptStagingFolders(s, c.stagingCandidates);
  return report();
}
