import { CreateSnapshotCommand, DeleteSnapshotCommand, type Snapshot } from "@aws-sdk/client-ec2";
import { RunctlError } from "../../../errors/runctl-error.js";
import { runctlTags, toAwsTags, validateRunIdTag } from "../tags.js";
import { pollUntil } from "../../../aws/aws-poll.js";
import { awsCall } from "../../../aws/aws-call.js";
import { awsErrorCode } from "../../../aws/aws-errors.js";
import type { EbsDeleteResult, EbsSnapshot } from "./ebs-types.js";
import { validateSnapshotId, validateTagValue, validateTtlMs, validateVolumeId } from "./validate-volume.js";
import type { EbsContext } from "./ebs-context.js";
import { DEFAULT_SNAPSHOT_TTL_MS } from "./ebs-context.js";
import { checkExtraTags, checkTimeout, toEbsSnapshot } from "./ebs-convert.js";
import type { DeleteEbsOptions, EbsVolumes, EbsWaitOptions, SnapshotEbsVolumeOptions } from "./ebs-options.js";

/** Snapshots a volume with runctl's tags (see {@link EbsVolumes.snapshot}). */
export async function snapshotVolume(ctx: EbsContext, volumeId: string, opts: SnapshotEbsVolumeOptions = {}): Promise<EbsSnapshot> {
  const { region, owner, retry, client, ledgerCreated, describe } = ctx;
  validateVolumeId(volumeId);
  const persistent = opts.persistent ?? false;
  if (persistent && opts.ttlMs !== undefined) throw new RunctlError("INVALID_ARGUMENT", "A persistent snapshot has no ttlMs: it is kept until deleted with force.");
  const ttlMs = persistent ? null : opts.ttlMs === undefined ? DEFAULT_SNAPSHOT_TTL_MS : validateTtlMs(opts.ttlMs);
  if (opts.runId !== undefined) validateRunIdTag(opts.runId);
  if (opts.name !== undefined) validateTagValue("name", opts.name);
  const description = opts.description ?? `runctl snapshot of ${volumeId}`;
  if (typeof description !== "string" || description.length > 255) throw new RunctlError("INVALID_ARGUMENT", "description must be a string of at most 255 characters.");
  checkExtraTags(opts.tags);
  const vol = await describe(volumeId, opts.signal);
  if (!vol) throw new RunctlError("NOT_FOUND", `Volume ${volumeId} does not exist in ${region}.`);
  const runId = opts.runId ?? vol.runId;
  const name = opts.name ?? vol.name ?? `runctl-snap-${volumeId}`;
  const tags = runctlTags({ runId: runId ?? `volume:${volumeId}`, owner, now: new Date(), ttlMs, name, persistent, extra: opts.tags });
  const out = await awsCall(
    "CreateSnapshot",
    (http) =>
      client().send(new CreateSnapshotCommand({ VolumeId: volumeId, Description: description, TagSpecifications: [{ ResourceType: "snapshot", Tags: toAwsTags(tags) }] }), http),
    { retry, signal: opts.signal },
  );
  if (!out.SnapshotId) throw new RunctlError("CLOUD_ERROR", "CreateSnapshot returned no snapshot id.");
  ledgerCreated("snapshot", out.SnapshotId, tags, runId, persistent);
  return toEbsSnapshot({ ...out, Tags: out.Tags && out.Tags.length > 0 ? out.Tags : toAwsTags(tags) });
}

/** Waits for a snapshot to complete (see {@link EbsVolumes.waitForSnapshot}). */
export async function waitForSnapshot(ctx: EbsContext, snapshotId: string, opts: EbsWaitOptions = {}): Promise<EbsSnapshot> {
  const { region, poll, describeSnapshot } = ctx;
  validateSnapshotId(snapshotId);
  const timeoutMs = checkTimeout(opts.timeoutMs, 3_600_000);
  let last: EbsSnapshot | undefined;
  return pollUntil(
    async () => {
      const s = await describeSnapshot(snapshotId, opts.signal);
      if (!s) throw new RunctlError("NOT_FOUND", `Snapshot ${snapshotId} does not exist in ${region}.`);
      last = s;
      if (s.state === "error") throw new RunctlError("CLOUD_ERROR", `Snapshot ${snapshotId} failed (state "error").`, { details: { snapshotId } });
      return s.state === "completed" ? s : undefined;
    },
    { timeoutMs, poll, signal: opts.signal, describe: () => `snapshot ${snapshotId} to complete (last seen: ${last ? `${last.state} ${last.progress ?? ""}`.trim() : "unknown"})`, details: { snapshotId } },
  );
}

/** Deletes a snapshot (see {@link EbsVolumes.deleteSnapshot}). */
export async function deleteSnapshot(ctx: EbsContext, snapshotId: string, opts: DeleteEbsOptions = {}): Promise<EbsDeleteResult> {
  const { retry, client, ledgerDeleted, describeSnapshot } = ctx;
  validateSnapshotId(snapshotId);
  const snap = await describeSnapshot(snapshotId, opts.signal);
  if (!snap) return { id: snapshotId, deleted: false, detached: false };
  if (snap.persistent && !opts.force) {
    throw new RunctlError("RESOURCE_IN_USE", `Snapshot ${snapshotId} is persistent (runctl:persistent=true); pass force: true to delete it.`, { details: { snapshotId } });
  }
  try {
    await awsCall("DeleteSnapshot", (http) => client().send(new DeleteSnapshotCommand({ SnapshotId: snapshotId }), http), { retry, signal: opts.signal });
  } catch (err) {
    const code = awsErrorCode(err);
    if (code === "InvalidSnapshot.NotFound") return { id: snapshotId, deleted: false, detached: false };
    if (code === "InvalidSnapshot.InUse") throw new RunctlError("RESOURCE_IN_USE", `Snapshot ${snapshotId} is in use (by an AMI or a pending copy).`, { cause: err, details: { snapshotId } });
    throw err;
  }
  ledgerDeleted("snapshot", snapshotId);
  return { id: snapshotId, deleted: true, detached: false };
}
