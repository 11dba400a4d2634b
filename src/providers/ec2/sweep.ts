import {
  DeleteKeyPairCommand,
  DeleteSecurityGroupCommand,
  DeleteSnapshotCommand,
  DeleteVolumeCommand,
  DescribeInstancesCommand,
  DescribeKeyPairsCommand,
  DescribeSecurityGroupsCommand,
  DescribeSnapshotsCommand,
  DescribeVolumesCommand,
  EC2Client,
  TerminateInstancesCommand,
  type Filter,
  type Instance,
} from "@aws-sdk/client-ec2";
import { RunctlError, abortError } from "../../errors/runctl-error.js";
import type { KeptResource, SweepFailure, SweepReport, SweptResource } from "../../engine/sweep-types.js";
import { recordResourceDeleted, type ResourceKind } from "../../ledger/resource-ledger.js";
import type { Storage } from "../../storage/types.js";
import { backoffDelayMs, pollUntil, resolvePollOptions, sleepMs, type PollOptions, type ResolvedPollOptions } from "../../aws/aws-poll.js";
import { AWS_SDK_MAX_ATTEMPTS, awsCall, resolveAwsRetry, type AwsRetryOptions } from "../../aws/aws-call.js";
import { awsErrorCode } from "../../aws/aws-errors.js";
import { validateRegion } from "./ebs/validate-volume.js";
import { DEFAULT_SWEEP_GRACE_MS, judge, runEndedFromJournal, type SweepContext, type SweepSubject } from "./sweep-rules.js";
import { deleteStagingFolder, findStagingFolders, type StagingFolder } from "./sweep-staging.js";
import { TAG, defaultOwner, fromAwsTags } from "./tags.js";

/** Instance states that count as a live machine of a run (it may still use the run's volumes, groups and key). */
const LIVE_STATES = new Set(["pending", "running", "stopping", "stopped"]);
/** The server-side filter every Describe call uses; the tag is checked again on each result. */
const RUNCTL_TAG_FILTER: Filter = { Name: "tag-key", Values: [TAG.runId] };

/**
 * How long a sweep waits for EC2 between its steps.
 *
 * @example
 * ```ts
 * sweepEc2({ region: "us-east-1", timing: { instanceWaitMs: 300_000 } });
 * ```
 */
export interface SweepTiming {
  /** Wait for terminated instances to reach `shutting-down`/`terminated` before deleting their resources. @defaultValue 120000 */
  readonly instanceWaitMs?: number;
  /** Wait for volumes still attached to swept instances to come free. @defaultValue 180000 */
  readonly volumeWaitMs?: number;
  /** Repeats of DeleteSecurityGroup while it fails with `DependencyViolation` (a network interface lingers). @defaultValue 6 */
  readonly dependencyRetries?: number;
  /** Pauses between checks and repeats. @defaultValue `{ initialMs: 2000, maxMs: 15000 }` */
  readonly poll?: PollOptions;
}

/**
 * Options of {@link sweepEc2}.
 *
 * @example
 * ```ts
 * const report = await sweepEc2({ region: "us-east-1", dryRun: true });
 * ```
 */
export interface SweepEc2Options {
  /** The region to sweep. */
  readonly region: string;
  /** The EC2 client to use. @defaultValue `new EC2Client({ region, maxAttempts: AWS_SDK_MAX_ATTEMPTS })` */
  readonly client?: EC2Client;
  /** Only resources whose `runctl:owner` is this; `"all"` for every owner. @defaultValue {@link defaultOwner}() */
  readonly owner?: string;
  /** Report only: no mutating call at all. @defaultValue false */
  readonly dryRun?: boolean;
  /**
   * Sweep expired resources even when their run looks alive (an instance of it is pending,
   * running or stopping and the run is not known to be over). Without it they are kept and
   * reported. @defaultValue false
   */
  readonly force?: boolean;
  /** "Now", for expiry and the grace period. @defaultValue the current time */
  readonly now?: Date;
  /** Resources without a live instance are kept this long after `runctl:created-at` (their run may still be launching). @defaultValue 900000 (15 min) */
  readonly graceMs?: number;
  /** Storages whose `runctl-staging/<scope>/` folders (the SSM transport's) are swept too. @defaultValue `[]` */
  readonly staging?: readonly Storage[];
  /** Whether a run is over; `undefined` when unknown. @defaultValue {@link runEndedFromJournal} (the local journal's exit event) */
  readonly runEnded?: (runId: string) => boolean | undefined;
  /** Repeats of throttled EC2 calls. @defaultValue `{ retries: 5, minDelayMs: 250, maxDelayMs: 8000 }` */
  readonly retry?: AwsRetryOptions;
  /** Waits between steps. @defaultValue see {@link SweepTiming} */
  readonly timing?: SweepTiming;
  /** Called with things worth knowing that do not fail the sweep. @defaultValue ignore them */
  readonly onWarning?: (message: string) => void;
  /** Aborts the sweep with ABORTED (what was deleted so far is in the ledger). */
  readonly signal?: AbortSignal;
}

interface VolumeCandidate {
  readonly resource: SweptResource;
  /** Instances it is attached to (not `detached`). */
  attachedTo: string[];
  state: string;
}

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
  const region = validateRegion(options.region);
  const owner = options.owner ?? defaultOwner();
  if (typeof owner !== "string" || owner === "") throw new RunctlError("INVALID_ARGUMENT", `owner must be a runctl:owner value or "all", got ${JSON.stringify(owner)}.`);
  const graceMs = options.graceMs ?? DEFAULT_SWEEP_GRACE_MS;
  if (!Number.isFinite(graceMs) || graceMs < 0) throw new RunctlError("INVALID_ARGUMENT", `graceMs must be a finite number >= 0, got ${String(graceMs)}.`);
  const now = options.now ?? new Date();
  if (Number.isNaN(now.getTime())) throw new RunctlError("INVALID_ARGUMENT", "now must be a valid Date.");
  const timing = {
    instanceWaitMs: options.timing?.instanceWaitMs ?? 120_000,
    volumeWaitMs: options.timing?.volumeWaitMs ?? 180_000,
    dependencyRetries: options.timing?.dependencyRetries ?? 6,
  };
  for (const [name, value] of Object.entries(timing)) {
    if (!Number.isFinite(value) || value < 0) throw new RunctlError("INVALID_ARGUMENT", `timing.${name} must be a finite number >= 0, got ${String(value)}.`);
  }
  const poll: ResolvedPollOptions = resolvePollOptions(options.timing?.poll, { initialMs: 2_000, maxMs: 15_000 });
  const retry = resolveAwsRetry(options.retry);
  const dryRun = options.dryRun ?? false;
  const force = options.force ?? false;
  if (typeof force !== "boolean") throw new RunctlError("INVALID_ARGUMENT", `force must be true or false, got ${JSON.stringify(force)}.`);
  const signal = options.signal;
  const client = options.client ?? new EC2Client({ region, maxAttempts: AWS_SDK_MAX_ATTEMPTS });
  const warn = (message: string): void => {
    try {
      options.onWarning?.(message);
    } catch {
      // A throwing callback must not stop a sweep half-way.
    }
  };
  const endedCache = new Map<string, boolean | undefined>();
  const runEndedFn = options.runEnded ?? runEndedFromJournal;
  const runEnded = (runId: string): boolean | undefined => {
    if (!endedCache.has(runId)) {
      let value: boolean | undefined;
      try {
        value = runEndedFn(runId);
      } catch (err) {
        warn(`runEnded(${runId}) failed: ${(err as Error).message}; treating the run as not known to be over.`);
      }
      endedCache.set(runId, value);
    }
    return endedCache.get(runId);
  };

  const found: SweptResource[] = [];
  const deleted: SweptResource[] = [];
  const kept: KeptResource[] = [];
  const errors: SweepFailure[] = [];
  const ledgerDeleted = (kind: ResourceKind, id: string): void => {
    try {
      recordResourceDeleted(kind, id);
    } catch (err) {
      warn(`Could not record the deletion of ${kind} ${id} in the resource ledger: ${(err as Error).message}`);
    }
  };
  const failed = (resource: SweptResource, err: unknown): void => {
    if (signal?.aborted) throw abortError(signal);
    errors.push({ resource, message: err instanceof Error ? err.message : String(err) });
  };

  // 1. The full picture first (every page): nothing is deleted on a partial view.
  const instances: Instance[] = [];
  let token: string | undefined;
  do {
    const page = await awsCall(
      "DescribeInstances",
      (http) =>
        client.send(
          new DescribeInstancesCommand({
            Filters: [RUNCTL_TAG_FILTER, { Name: "instance-state-name", Values: ["pending", "running", "stopping", "stopped", "shutting-down"] }],
            MaxResults: 1000,
            ...(token ? { NextToken: token } : {}),
          }),
          http,
        ),
      { retry, signal: signal },
    );
    for (const r of page.Reservations ?? []) for (const i of r.Instances ?? []) if (i.InstanceId) instances.push(i);
    token = page.NextToken || undefined;
  } while (token);

  const volumes = [];
  token = undefined;
  do {
    const page = await awsCall(
      "DescribeVolumes",
      (http) => client.send(new DescribeVolumesCommand({ Filters: [RUNCTL_TAG_FILTER], MaxResults: 500, ...(token ? { NextToken: token } : {}) }), http),
      { retry, signal: signal },
    );
    volumes.push(...(page.Volumes ?? []));
    token = page.NextToken || undefined;
  } while (token);

  const groups = [];
  token = undefined;
  do {
    const page = await awsCall(
      "DescribeSecurityGroups",
      (http) => client.send(new DescribeSecurityGroupsCommand({ Filters: [RUNCTL_TAG_FILTER], MaxResults: 1000, ...(token ? { NextToken: token } : {}) }), http),
      { retry, signal: signal },
    );
    groups.push(...(page.SecurityGroups ?? []));
    token = page.NextToken || undefined;
  } while (token);

  // DescribeKeyPairs has no pagination: one answer holds every key pair of the region.
  const keyPairs = (await awsCall("DescribeKeyPairs", (http) => client.send(new DescribeKeyPairsCommand({ Filters: [RUNCTL_TAG_FILTER] }), http), { retry, signal: signal })).KeyPairs ?? [];

  // Only this account's own snapshots (never public or shared ones that happen to carry the tag).
  const snapshots = [];
  token = undefined;
  do {
    const page = await awsCall(
      "DescribeSnapshots",
      (http) => client.send(new DescribeSnapshotsCommand({ OwnerIds: ["self"], Filters: [RUNCTL_TAG_FILTER], MaxResults: 1000, ...(token ? { NextToken: token } : {}) }), http),
      { retry, signal: signal },
    );
    snapshots.push(...(page.Snapshots ?? []));
    token = page.NextToken || undefined;
  } while (token);

  // 2. Judge instances; the ones that stay (whoever owns them) protect their run's other resources.
  const ctxBase = { owner, now, graceMs, runEnded, force };
  const sweptInstances: { resource: SweptResource; instanceId: string }[] = [];
  const liveRunIds = new Map<string, string>();
  const instanceStates = new Map<string, string>();
  const goingInstances = new Set<string>();
  const instanceVerdicts = instances.map((i) => {
    const tags = fromAwsTags(i.Tags);
    const state = i.State?.Name ?? "";
    if (!LIVE_STATES.has(state)) {
      goingInstances.add(i.InstanceId!);
      return undefined; // shutting-down already: nothing to do, and it no longer protects anything
    }
    return { instanceId: i.InstanceId!, state, tags, verdict: judge({ kind: "instance", id: i.InstanceId!, tags, cloudCreatedAt: i.LaunchTime, state }, { ...ctxBase, liveRunIds: new Map() }) };
  });
  for (const v of instanceVerdicts) {
    if (!v) continue;
    if (v.verdict.verdict === "sweep") {
      found.push(v.verdict.resource);
      sweptInstances.push({ resource: v.verdict.resource, instanceId: v.instanceId });
      goingInstances.add(v.instanceId);
    } else {
      if (v.verdict.verdict === "keep") kept.push({ resource: v.verdict.resource, reason: v.verdict.reason });
      const runId = v.tags[TAG.runId];
      // A running instance speaks for its run over a stopped one of the same run.
      if (runId && (!liveRunIds.has(runId) || v.state !== "stopped")) liveRunIds.set(runId, v.instanceId);
      instanceStates.set(v.instanceId, v.state);
    }
  }
  const ctx: SweepContext = { ...ctxBase, liveRunIds, instanceStates };

  const judgeAll = <T>(items: readonly T[], subject: (item: T) => SweepSubject | undefined): { item: T; resource: SweptResource }[] => {
    const out: { item: T; resource: SweptResource }[] = [];
    for (const item of items) {
      const s = subject(item);
      if (!s) continue;
      const v = judge(s, ctx);
      if (v.verdict === "sweep") out.push({ item, resource: v.resource });
      else if (v.verdict === "keep") kept.push({ resource: v.resource, reason: v.reason });
    }
    return out;
  };

  // Volumes: attached to an instance that stays → kept; attached to a swept or dying one → waited for.
  const volumeCandidates: VolumeCandidate[] = [];
  for (const { item, resource } of judgeAll(volumes, (v) => (v.VolumeId ? { kind: "volume", id: v.VolumeId, tags: fromAwsTags(v.Tags), cloudCreatedAt: v.CreateTime } : undefined))) {
    const state = item.State ?? "";
    if (state === "deleting" || state === "deleted") continue;
    const attachedTo = (item.Attachments ?? []).filter((a) => a.State !== "detached" && a.InstanceId).map((a) => a.InstanceId!);
    const blocking = attachedTo.filter((id) => !goingInstances.has(id));
    if (blocking.length > 0) kept.push({ resource, reason: `attached to ${blocking.join(", ")}` });
    else if (state === "creating") kept.push({ resource, reason: "still being created" });
    else {
      found.push(resource);
      volumeCandidates.push({ resource, attachedTo, state });
    }
  }
  const groupCandidates = judgeAll(groups, (g) => (g.GroupId ? { kind: "security-group", id: g.GroupId, tags: fromAwsTags(g.Tags) } : undefined));
  found.push(...groupCandidates.map((c) => c.resource));
  // Snapshots: never one of a persistent volume (the volume is kept for good; so is what it was made from).
  const persistentVolumes = new Set(volumes.filter((v) => fromAwsTags(v.Tags)[TAG.persistent] === "true").map((v) => v.VolumeId));
  const snapshotCandidates: SweptResource[] = [];
  for (const { item, resource } of judgeAll(snapshots, (sn) => (sn.SnapshotId ? { kind: "snapshot", id: sn.SnapshotId, tags: fromAwsTags(sn.Tags), cloudCreatedAt: sn.StartTime } : undefined))) {
    if (item.VolumeId && persistentVolumes.has(item.VolumeId)) kept.push({ resource, reason: `a snapshot of persistent volume ${item.VolumeId}` });
    else if (item.State === "pending") kept.push({ resource, reason: "still being created" });
    else {
      found.push(resource);
      snapshotCandidates.push(resource);
    }
  }
  const keyCandidates = judgeAll(keyPairs, (k) => (k.KeyName ? { kind: "key-pair", id: k.KeyName, tags: fromAwsTags(k.Tags), cloudCreatedAt: k.CreateTime } : undefined));
  found.push(...keyCandidates.map((c) => c.resource));

  // Staging folders: read (not deleted) before anything is deleted, so a dry run sees the same.
  const stagingCandidates: { folder: StagingFolder; resource: SweptResource }[] = [];
  for (const storage of options.staging ?? []) {
    let folders: StagingFolder[];
    try {
      folders = await findStagingFolders(storage, signal);
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      warn(`Could not list the staging folders of ${storage.uri}: ${(err as Error).message}`);
      continue;
    }
    for (const c of judgeAll(folders, (f) => ({ kind: "s3-prefix", id: f.id, tags: f.tags, cloudCreatedAt: f.modifiedAt }))) {
      found.push(c.resource);
      stagingCandidates.push({ folder: c.item, resource: c.resource });
    }
  }

  if (dryRun) return { dryRun, found, deleted, kept, errors };

  // 3. Instances first: their volumes, network interfaces and groups come free only once they are gone.
  const terminated: string[] = [];
  const terminate = async (batch: { resource: SweptResource; instanceId: string }[]): Promise<void> => {
    try {
      await awsCall("TerminateInstances", (http) => client.send(new TerminateInstancesCommand({ InstanceIds: batch.map((b) => b.instanceId) }), http), { retry, signal: signal });
      for (const b of batch) {
        deleted.push(b.resource);
        terminated.push(b.instanceId);
        ledgerDeleted("instance", b.instanceId);
      }
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      // One bad id fails the whole call: repeat one by one to isolate it.
      if (batch.length > 1) {
        for (const b of batch) await terminate([b]);
        return;
      }
      const only = batch[0]!;
      if (awsErrorCode(err) === "InvalidInstanceID.NotFound") {
        deleted.push(only.resource);
        ledgerDeleted("instance", only.instanceId);
      } else failed(only.resource, err);
    }
  };
  for (let i = 0; i < sweptInstances.length; i += 50) await terminate(sweptInstances.slice(i, i + 50));
  if (terminated.length > 0) {
    try {
      await pollUntil(
        async () => {
          const out = await awsCall("DescribeInstances", (http) => client.send(new DescribeInstancesCommand({ InstanceIds: terminated }), http), { retry, signal: signal }).catch((err: unknown) => {
            // An id EC2 has already forgotten is as gone as it gets.
            if (awsErrorCode(err) === "InvalidInstanceID.NotFound") return { Reservations: [] };
            throw err;
          });
          const alive = (out.Reservations ?? []).flatMap((r) => r.Instances ?? []).filter((i) => LIVE_STATES.has(i.State?.Name ?? ""));
          return alive.length === 0 ? true : undefined;
        },
        { timeoutMs: timing.instanceWaitMs, poll, signal, describe: () => `instances ${terminated.join(", ")} to shut down` },
      );
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      warn(`${(err as Error).message} Going on with the other resources; attached ones are kept for the next sweep.`);
    }
  }

  // 4. Volumes: available ones now; attached ones (to swept or dying instances) as they come free.
  const deleteVolume = async (c: VolumeCandidate): Promise<"deleted" | "attached" | "failed"> => {
    try {
      await awsCall("DeleteVolume", (http) => client.send(new DeleteVolumeCommand({ VolumeId: c.resource.id }), http), { retry, signal: signal });
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      const code = awsErrorCode(err);
      if (code === "VolumeInUse" || code === "IncorrectState") return "attached";
      if (code !== "InvalidVolume.NotFound") {
        failed(c.resource, err);
        return "failed";
      }
      // Gone already (DeleteOnTermination took it with its instance).
    }
    deleted.push(c.resource);
    ledgerDeleted("volume", c.resource.id);
    return "deleted";
  };
  let waiting: VolumeCandidate[] = [];
  for (const c of volumeCandidates) {
    if (c.state === "available" && c.attachedTo.length === 0) {
      if ((await deleteVolume(c)) === "attached") waiting.push(c);
    } else waiting.push(c);
  }
  if (waiting.length > 0) {
    try {
      await pollUntil(
        async () => {
          const out = await awsCall("DescribeVolumes", (http) => client.send(new DescribeVolumesCommand({ VolumeIds: waiting.map((w) => w.resource.id) }), http), { retry, signal: signal }).catch((err: unknown) => {
            if (awsErrorCode(err) === "InvalidVolume.NotFound") return { Volumes: undefined };
            throw err;
          });
          const byId = new Map((out.Volumes ?? []).map((v) => [v.VolumeId, v]));
          const still: VolumeCandidate[] = [];
          for (const w of waiting) {
            const v = byId.get(w.resource.id);
            if (out.Volumes !== undefined && !v) {
              // Deleted with its instance.
              deleted.push(w.resource);
              ledgerDeleted("volume", w.resource.id);
              continue;
            }
            w.state = v?.State ?? w.state;
            w.attachedTo = (v?.Attachments ?? []).filter((a) => a.State !== "detached" && a.InstanceId).map((a) => a.InstanceId!);
            if (w.state === "deleting" || w.state === "deleted") {
              deleted.push(w.resource);
              ledgerDeleted("volume", w.resource.id);
            } else if (w.state === "available" || out.Volumes === undefined) {
              if ((await deleteVolume(w)) === "attached") still.push(w);
            } else still.push(w);
          }
          waiting = still;
          return waiting.length === 0 ? true : undefined;
        },
        { timeoutMs: timing.volumeWaitMs, poll, signal, describe: () => `volumes ${waiting.map((w) => w.resource.id).join(", ")} to come free` },
      );
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      if (!(err instanceof RunctlError && err.code === "PROVISION_TIMEOUT")) warn(`Waiting for volumes failed: ${(err as Error).message}`);
    }
    for (const w of waiting) kept.push({ resource: w.resource, reason: `still attached to ${w.attachedTo.join(", ") || "an instance"}; the next sweep retries` });
  }

  // 4b. Snapshots (independent of everything else).
  for (const resource of snapshotCandidates) {
    try {
      await awsCall("DeleteSnapshot", (http) => client.send(new DeleteSnapshotCommand({ SnapshotId: resource.id }), http), { retry, signal: signal });
      deleted.push(resource);
      ledgerDeleted("snapshot", resource.id);
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      const code = awsErrorCode(err);
      if (code === "InvalidSnapshot.NotFound") {
        deleted.push(resource);
        ledgerDeleted("snapshot", resource.id);
      } else if (code === "InvalidSnapshot.InUse") kept.push({ resource, reason: "in use (an AMI is registered from it)" });
      else failed(resource, err);
    }
  }

  // 5. Security groups, in parallel: one may reference another, and a terminated instance's network interface lingers for a while.
  await Promise.all(
    groupCandidates.map(async ({ resource }) => {
      for (let attempt = 0; ; attempt++) {
        try {
          await awsCall("DeleteSecurityGroup", (http) => client.send(new DeleteSecurityGroupCommand({ GroupId: resource.id }), http), { retry, signal: signal });
        } catch (err) {
          if (signal?.aborted) throw abortError(signal);
          const code = awsErrorCode(err);
          if (code === "InvalidGroup.NotFound") break;
          if (code === "DependencyViolation" || code === "InvalidGroup.InUse") {
            if (attempt < timing.dependencyRetries) {
              await sleepMs(backoffDelayMs(attempt, poll), signal);
              continue;
            }
            kept.push({ resource, reason: "in use (a network interface or another group still refers to it); the next sweep retries" });
            return;
          }
          failed(resource, err);
          return;
        }
        break;
      }
      deleted.push(resource);
      ledgerDeleted("security-group", resource.id);
    }),
  );

  // 6. Key pairs.
  for (const { item, resource } of keyCandidates) {
    try {
      await awsCall("DeleteKeyPair", (http) => client.send(new DeleteKeyPairCommand(item.KeyPairId ? { KeyPairId: item.KeyPairId } : { KeyName: resource.id }), http), { retry, signal: signal });
      deleted.push(resource);
      ledgerDeleted("key-pair", resource.id);
    } catch (err) {
      if (awsErrorCode(err) === "InvalidKeyPair.NotFound") {
        deleted.push(resource);
        ledgerDeleted("key-pair", resource.id);
      } else failed(resource, err);
    }
  }

  // 7. Staging folders (marker last).
  for (const { folder, resource } of stagingCandidates) {
    try {
      await deleteStagingFolder(folder, signal);
      deleted.push(resource);
      ledgerDeleted("s3-prefix", resource.id);
    } catch (err) {
      failed(resource, err);
    }
  }

  return { dryRun, found, deleted, kept, errors };
}
