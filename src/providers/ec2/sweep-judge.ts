import type { KeyPairInfo, SecurityGroup } from "@aws-sdk/client-ec2";
import { abortError } from "../../errors/runctl-error.js";
import type { SweptResource } from "../sweep-types.js";
import type { Storage } from "../../storage/types.js";
import { judge, type SweepContext, type SweepSubject } from "./sweep-rules.js";
import { findStagingFolders, type StagingFolder } from "./sweep-staging.js";
import { TAG, fromAwsTags } from "./tags.js";
import { LIVE_STATES, type VolumeCandidate } from "./sweep-options.js";
import type { SweepSession } from "./sweep-session.js";
import type { DescribedResources } from "./sweep-describe.js";

/** What a sweep will delete, by kind, after judging (kept resources are already in the report). */
export interface SweepCandidates {
  readonly sweptInstances: { resource: SweptResource; instanceId: string }[];
  readonly volumeCandidates: VolumeCandidate[];
  readonly groupCandidates: { item: SecurityGroup; resource: SweptResource }[];
  readonly snapshotCandidates: SweptResource[];
  readonly keyCandidates: { item: KeyPairInfo; resource: SweptResource }[];
  readonly stagingCandidates: { folder: StagingFolder; resource: SweptResource }[];
}
/**
 * Step 2 of a sweep: judges every resource (sweep-rules.ts); the instances that stay protect their
 * run's other resources. Staging folders are read here, before anything is deleted, so a dry run
 * sees the same.
 *
 * @example
 * ```ts
 * const c = await judgeResources(s, await describeRunctlResources(s), []);
 * ```
 */
export async function judgeResources(s: SweepSession, described: DescribedResources, staging: readonly Storage[]): Promise<SweepCandidates> {
  const { owner, graceMs, now, force, signal, warn, runEnded, found, deleted, kept } = s;
  const { instances, volumes, groups, keyPairs, snapshots } = described;
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
  for (const storage of staging) {
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

  return { sweptInstances, volumeCandidates, groupCandidates, snapshotCandidates, keyCandidates, stagingCandidates };
}
