import { randomUUID } from "node:crypto";
import {
  AttachVolumeCommand,
  CreateSnapshotCommand,
  CreateVolumeCommand,
  DeleteSnapshotCommand,
  DeleteVolumeCommand,
  DescribeInstancesCommand,
  DescribeSnapshotsCommand,
  DescribeVolumesCommand,
  DetachVolumeCommand,
  EC2Client,
  type Snapshot,
  type Volume,
} from "@aws-sdk/client-ec2";
import { RunctlError } from "../../../errors/runctl-error.js";
import { recordResourceCreated, recordResourceDeleted, type ResourceKind } from "../../../ledger/resource-ledger.js";
import { TAG, defaultOwner, fromAwsTags, runctlTags, toAwsTags, validateRunIdTag } from "../tags.js";
import { pollUntil, resolvePollOptions, type PollOptions, type ResolvedPollOptions } from "../../../aws/aws-poll.js";
import { AWS_SDK_MAX_ATTEMPTS, awsCall, resolveAwsRetry, type AwsRetryOptions, type ResolvedAwsRetryOptions } from "../../../aws/aws-call.js";
import { awsErrorCode } from "../../../aws/aws-errors.js";
import type { EbsAttachResult, EbsDeleteResult, EbsDetachResult, EbsSnapshot, EbsSnapshotState, EbsVolume, EbsVolumeState, EbsVolumeType } from "./ebs-types.js";
import {
  validateAvailabilityZone,
  validateDeviceName,
  validateInstanceId,
  validateRegion,
  validateSnapshotId,
  validateTagValue,
  validateTtlMs,
  validateVolumeId,
  validateVolumeSpec,
  type VolumeSpec,
} from "./validate-volume.js";

/** Default time-to-live of a non-persistent volume made outside a run: one day. */
const DEFAULT_VOLUME_TTL_MS = 24 * 3_600_000;
/** Default time-to-live of a non-persistent snapshot: one week. */
const DEFAULT_SNAPSHOT_TTL_MS = 7 * 24 * 3_600_000;
/** How long a volume id may be unknown to DescribeVolumes right after creation (EC2 is eventually consistent). */
const NOT_FOUND_GRACE_MS = 15_000;

/**
 * Options of {@link ebsVolumes}.
 *
 * @example
 * ```ts
 * const volumes = ebsVolumes({ region: "us-east-1", onWarning: (m) => console.warn(m) });
 * ```
 */
export interface EbsVolumesOptions {
  /** The AWS region of the volumes. */
  readonly region: string;
  /** The EC2 client to use. @defaultValue `new EC2Client({ region, maxAttempts: AWS_SDK_MAX_ATTEMPTS })` (the standard credential chain) */
  readonly client?: EC2Client;
  /** The `runctl:owner` tag of what this creates. @defaultValue {@link defaultOwner}() (`user@host`) */
  readonly owner?: string;
  /** Called with things worth knowing that do not fail the call. @defaultValue ignore them */
  readonly onWarning?: (message: string) => void;
  /** Repeats of throttled or 5xx EC2 calls. @defaultValue `{ retries: 5, minDelayMs: 250, maxDelayMs: 8000 }` */
  readonly retry?: AwsRetryOptions;
  /** Pauses between checks while waiting. @defaultValue `{ initialMs: 1000, maxMs: 15000 }` */
  readonly poll?: PollOptions;
}

/**
 * Options of {@link EbsVolumes.create}.
 *
 * @example
 * ```ts
 * await volumes.create({ sizeGb: 500, type: "gp3", iops: 6000, throughputMiBps: 500, availabilityZone: "us-east-1b", runId: run.runId });
 * ```
 */
export interface CreateEbsVolumeOptions {
  /** Size in GiB (gp3/gp2 1–65,536/16,384; io1 4–16,384; io2 4–65,536; st1/sc1 125–16,384). Optional only with `snapshotId`. */
  readonly sizeGb?: number;
  /** Volume type. @defaultValue `"gp3"` */
  readonly type?: EbsVolumeType;
  /** Provisioned IOPS (gp3 3,000–80,000; io1 100–64,000; io2 100–256,000; required for io1/io2). @defaultValue EC2's baseline (3,000 on gp3) */
  readonly iops?: number;
  /** Provisioned throughput in MiB/s, gp3 only (125–2,000, at most 0.25 per IOPS). @defaultValue 125 */
  readonly throughputMiBps?: number;
  /** Encrypt the volume. @defaultValue the account's EBS encryption-by-default setting */
  readonly encrypted?: boolean;
  /** The KMS key for encryption (needs `encrypted: true`). @defaultValue the account's EBS key */
  readonly kmsKeyId?: string;
  /** The zone to create it in: the zone of the instance it will attach to. Required; never guessed. */
  readonly availabilityZone: string;
  /** Keep it beyond runs: tagged `runctl:persistent=true`, no `runctl:expires-at`; never swept, deleted only with `force`. @defaultValue false */
  readonly persistent?: boolean;
  /** Its `Name` tag. @defaultValue `runctl-<runId>` or `runctl-vol-<random>` */
  readonly name?: string;
  /** The run it belongs to (`runctl:run-id`); it is swept once that run is over. @defaultValue `volume:<name>` */
  readonly runId?: string;
  /** When it may be swept, from now (`runctl:expires-at`). Not with `persistent`. @defaultValue one day */
  readonly ttlMs?: number;
  /** Restore this snapshot into the new volume. */
  readonly snapshotId?: string;
  /** Extra tags (runctl's own tags win on a clash). @defaultValue `{}` */
  readonly tags?: Readonly<Record<string, string>>;
  /** Aborts the call with ABORTED. */
  readonly signal?: AbortSignal;
}

/**
 * Options of {@link EbsVolumes.restore}: those of `create` without `snapshotId`; the size defaults to the snapshot's.
 *
 * @example
 * ```ts
 * await volumes.restore("snap-0123456789abcdef0", { availabilityZone: "us-east-1c", sizeGb: 200 });
 * ```
 */
export type RestoreEbsSnapshotOptions = Omit<CreateEbsVolumeOptions, "snapshotId">;

/**
 * Options of the waits ({@link EbsVolumes.waitFor}, {@link EbsVolumes.waitForSnapshot}).
 *
 * @example
 * ```ts
 * await volumes.waitFor("vol-0123456789abcdef0", "available", { timeoutMs: 120_000, signal });
 * ```
 */
export interface EbsWaitOptions {
  /** Give up with PROVISION_TIMEOUT after this long. @defaultValue 300000 (volumes), 3600000 (snapshots) */
  readonly timeoutMs?: number;
  /** Aborts the wait with ABORTED. */
  readonly signal?: AbortSignal;
}

/**
 * Options of {@link EbsVolumes.attach}.
 *
 * @example
 * ```ts
 * await volumes.attach("vol-0123456789abcdef0", "i-0123456789abcdef0", { device: "/dev/sdg" });
 * ```
 */
export interface AttachEbsVolumeOptions extends EbsWaitOptions {
  /** The device name to attach it as. @defaultValue `"/dev/sdf"` */
  readonly device?: string;
  /** Wait until EC2 reports it `attached` (and wait first for a volume still `creating`). @defaultValue true */
  readonly wait?: boolean;
}

/**
 * Options of {@link EbsVolumes.detach}.
 *
 * @example
 * ```ts
 * await volumes.detach("vol-0123456789abcdef0", { timeoutMs: 120_000 });
 * ```
 */
export interface DetachEbsVolumeOptions extends EbsWaitOptions {
  /** Force the detach (the OS gets no chance to flush: unmount first). @defaultValue false */
  readonly force?: boolean;
  /** Wait until the volume is `available` again. @defaultValue true */
  readonly wait?: boolean;
}

/**
 * Options of {@link EbsVolumes.snapshot}.
 *
 * @example
 * ```ts
 * await volumes.snapshot("vol-0123456789abcdef0", { description: "imagenet v2", persistent: true });
 * ```
 */
export interface SnapshotEbsVolumeOptions {
  /** The snapshot's description. @defaultValue `"runctl snapshot of <volumeId>"` */
  readonly description?: string;
  /** Keep it beyond runs (no `runctl:expires-at`; deleted only with `force`). @defaultValue false */
  readonly persistent?: boolean;
  /** Its `Name` tag. @defaultValue the volume's name, else `runctl-snap-<volumeId>` */
  readonly name?: string;
  /** Its `runctl:run-id` tag. @defaultValue the volume's, else `volume:<volumeId>` */
  readonly runId?: string;
  /** When it may be swept, from now. Not with `persistent`. @defaultValue one week */
  readonly ttlMs?: number;
  /** Extra tags. @defaultValue `{}` */
  readonly tags?: Readonly<Record<string, string>>;
  /** Aborts the call with ABORTED. */
  readonly signal?: AbortSignal;
}

/**
 * Options of {@link EbsVolumes.delete} and {@link EbsVolumes.deleteSnapshot}.
 *
 * @example
 * ```ts
 * await volumes.delete("vol-0123456789abcdef0", { force: true });
 * ```
 */
export interface DeleteEbsOptions extends EbsWaitOptions {
  /** Delete a persistent volume or snapshot, and detach an attached volume first (forced). @defaultValue false */
  readonly force?: boolean;
}

/**
 * Options of {@link EbsVolumes.list}.
 *
 * @example
 * ```ts
 * await volumes.list({ owner: "alice@laptop" });
 * ```
 */
export interface ListEbsVolumesOptions {
  /** Only volumes with this `runctl:owner`; `"all"` for every owner. @defaultValue `"all"` */
  readonly owner?: string;
  /** Aborts the call with ABORTED. */
  readonly signal?: AbortSignal;
}

/**
 * runctl's EBS volumes in one region: create (tagged at creation), attach, wait, detach, snapshot,
 * restore, delete, list. Every call validates its input before any AWS call, repeats throttled
 * calls, takes an AbortSignal, and records what it creates and deletes in the local resource ledger.
 * Mount the attached volume on the machine with {@link mountVolume}.
 *
 * @example
 * ```ts
 * const volumes = ebsVolumes({ region: "us-east-1" });
 * const az = await volumes.availabilityZoneOf("i-0123456789abcdef0");
 * const vol = await volumes.create({ sizeGb: 200, type: "gp3", availabilityZone: az, persistent: true, name: "imagenet" });
 * await volumes.waitFor(vol.volumeId, "available", { timeoutMs: 300_000 });
 * await volumes.attach(vol.volumeId, "i-0123456789abcdef0");
 * ```
 */
export interface EbsVolumes {
  /** The region of these volumes. */
  readonly region: string;
  /** Creates a volume (state `creating`; see {@link EbsVolumes.waitFor}). */
  create(options: CreateEbsVolumeOptions): Promise<EbsVolume>;
  /** What EC2 says about a volume, or undefined when it does not exist. */
  describe(volumeId: string, options?: { readonly signal?: AbortSignal }): Promise<EbsVolume | undefined>;
  /** Waits until the volume is `available`, or `in-use` with an `attached` attachment. */
  waitFor(volumeId: string, state: "available" | "in-use", options?: EbsWaitOptions): Promise<EbsVolume>;
  /** Attaches a volume to an instance in the same zone. RESOURCE_IN_USE when attached elsewhere. */
  attach(volumeId: string, instanceId: string, options?: AttachEbsVolumeOptions): Promise<EbsAttachResult>;
  /** Detaches a volume (a no-op when it is not attached). Unmount it first. */
  detach(volumeId: string, options?: DetachEbsVolumeOptions): Promise<EbsDetachResult>;
  /** Starts a snapshot of a volume, tagged at creation (state `pending`; see {@link EbsVolumes.waitForSnapshot}). */
  snapshot(volumeId: string, options?: SnapshotEbsVolumeOptions): Promise<EbsSnapshot>;
  /** Waits until a snapshot is `completed`. */
  waitForSnapshot(snapshotId: string, options?: EbsWaitOptions): Promise<EbsSnapshot>;
  /** Creates a volume from a snapshot (at least the snapshot's size). */
  restore(snapshotId: string, options: RestoreEbsSnapshotOptions): Promise<EbsVolume>;
  /** Deletes a volume; RESOURCE_IN_USE for a persistent or attached one unless `force`. */
  delete(volumeId: string, options?: DeleteEbsOptions): Promise<EbsDeleteResult>;
  /** Deletes a snapshot; RESOURCE_IN_USE for a persistent one unless `force`. */
  deleteSnapshot(snapshotId: string, options?: DeleteEbsOptions): Promise<EbsDeleteResult>;
  /** Every runctl-tagged volume in the region (all pages). */
  list(options?: ListEbsVolumesOptions): Promise<EbsVolume[]>;
  /** The Availability Zone of an instance: where its volumes must be created. */
  availabilityZoneOf(instanceId: string, options?: { readonly signal?: AbortSignal }): Promise<string>;
}

/**
 * Turns EC2's volume shape into an {@link EbsVolume}.
 *
 * @example
 * ```ts
 * const v = toEbsVolume({ VolumeId: "vol-0123456789abcdef0", State: "available", Size: 10 });
 * ```
 */
export function toEbsVolume(v: Volume): EbsVolume {
  if (!v.VolumeId) throw new RunctlError("CLOUD_ERROR", "EC2 returned a volume without an id.");
  const tags = fromAwsTags(v.Tags);
  const runId = tags[TAG.runId];
  const name = tags[TAG.name];
  return {
    volumeId: v.VolumeId,
    state: (v.State ?? "error") as EbsVolumeState,
    sizeGb: v.Size ?? 0,
    type: v.VolumeType ?? "unknown",
    ...(v.Iops !== undefined ? { iops: v.Iops } : {}),
    ...(v.Throughput !== undefined ? { throughputMiBps: v.Throughput } : {}),
    encrypted: v.Encrypted ?? false,
    availabilityZone: v.AvailabilityZone ?? "",
    ...(v.SnapshotId ? { snapshotId: v.SnapshotId } : {}),
    ...(v.CreateTime ? { createdAt: v.CreateTime } : {}),
    attachments: (v.Attachments ?? []).map((a) => ({
      instanceId: a.InstanceId ?? "",
      device: a.Device ?? "",
      state: a.State ?? "",
      deleteOnTermination: a.DeleteOnTermination ?? false,
    })),
    tags,
    ...(runId !== undefined ? { runId } : {}),
    persistent: tags[TAG.persistent] === "true",
    ...(name !== undefined ? { name } : {}),
  };
}

/**
 * Turns EC2's snapshot shape into an {@link EbsSnapshot}.
 *
 * @example
 * ```ts
 * const s = toEbsSnapshot({ SnapshotId: "snap-0123456789abcdef0", State: "completed", VolumeSize: 10 });
 * ```
 */
export function toEbsSnapshot(s: Snapshot): EbsSnapshot {
  if (!s.SnapshotId) throw new RunctlError("CLOUD_ERROR", "EC2 returned a snapshot without an id.");
  const tags = fromAwsTags(s.Tags);
  const runId = tags[TAG.runId];
  return {
    snapshotId: s.SnapshotId,
    volumeId: s.VolumeId ?? "",
    state: (s.State ?? "error") as EbsSnapshotState,
    ...(s.Progress !== undefined ? { progress: s.Progress } : {}),
    sizeGb: s.VolumeSize ?? 0,
    encrypted: s.Encrypted ?? false,
    ...(s.StartTime ? { startedAt: s.StartTime } : {}),
    ...(s.Description !== undefined ? { description: s.Description } : {}),
    tags,
    ...(runId !== undefined ? { runId } : {}),
    persistent: tags[TAG.persistent] === "true",
  };
}

function checkExtraTags(tags: Readonly<Record<string, string>> | undefined): void {
  for (const [key, value] of Object.entries(tags ?? {})) {
    if (key === "" || key.length > 128 || key.toLowerCase().startsWith("aws:")) {
      throw new RunctlError("INVALID_ARGUMENT", `Tag key ${JSON.stringify(key)} is not allowed: 1–128 characters, not starting with "aws:".`);
    }
    if (typeof value !== "string" || value.length > 256) throw new RunctlError("INVALID_ARGUMENT", `Tag ${key} must have a string value of at most 256 characters.`);
  }
}

function checkTimeout(timeoutMs: number | undefined, fallback: number): number {
  const value = timeoutMs ?? fallback;
  if (!Number.isFinite(value) || value < 0) throw new RunctlError("INVALID_ARGUMENT", `timeoutMs must be a finite number >= 0, got ${String(timeoutMs)}.`);
  return value;
}

/**
 * runctl's EBS API for one region; see {@link EbsVolumes}.
 *
 * @param options - Region, optional client, owner tag, warnings callback, retry and poll pacing.
 * @returns The volume operations.
 * @throws RunctlError INVALID_ARGUMENT for a bad region or option.
 *
 * @example
 * ```ts
 * const volumes = ebsVolumes({ region: "eu-west-1" });
 * for (const v of await volumes.list()) console.log(v.volumeId, v.state, v.persistent);
 * ```
 */
export function ebsVolumes(options: EbsVolumesOptions): EbsVolumes {
  const region = validateRegion(options.region);
  const owner = options.owner ?? defaultOwner();
  validateTagValue("owner", owner);
  const retry: ResolvedAwsRetryOptions = resolveAwsRetry(options.retry);
  const poll: ResolvedPollOptions = resolvePollOptions(options.poll);
  const warn = (message: string): void => {
    try {
      options.onWarning?.(message);
    } catch {
      // A throwing warning callback must not turn a success into a failure.
    }
  };
  let clientValue = options.client;
  // Created on first use, so validation errors never construct a client (or touch credentials).
  const client = (): EC2Client => (clientValue ??= new EC2Client({ region, maxAttempts: AWS_SDK_MAX_ATTEMPTS }));

  const ledgerCreated = (kind: ResourceKind, id: string, tags: Record<string, string>, runId: string | undefined, persistent: boolean): void => {
    try {
      recordResourceCreated({
        kind,
        id,
        provider: "ec2",
        region,
        ...(runId !== undefined ? { runId } : {}),
        createdAt: tags[TAG.createdAt] ?? new Date().toISOString(),
        ...(tags[TAG.expiresAt] !== undefined ? { expiresAt: tags[TAG.expiresAt] } : {}),
        ...(persistent ? { persistent: true } : {}),
        tags,
      });
    } catch (err) {
      warn(`Could not record ${kind} ${id} in the resource ledger: ${(err as Error).message}`);
    }
  };
  const ledgerDeleted = (kind: ResourceKind, id: string): void => {
    try {
      recordResourceDeleted(kind, id);
    } catch (err) {
      warn(`Could not record the deletion of ${kind} ${id} in the resource ledger: ${(err as Error).message}`);
    }
  };

  const describe = async (volumeId: string, signal?: AbortSignal): Promise<EbsVolume | undefined> => {
    try {
      const out = await awsCall("DescribeVolumes", (http) => client().send(new DescribeVolumesCommand({ VolumeIds: [volumeId] }), http), { retry, signal: signal });
      const v = out.Volumes?.find((x) => x.VolumeId === volumeId);
      return v ? toEbsVolume(v) : undefined;
    } catch (err) {
      if (awsErrorCode(err) === "InvalidVolume.NotFound") return undefined;
      throw err;
    }
  };

  const describeSnapshot = async (snapshotId: string, signal?: AbortSignal): Promise<EbsSnapshot | undefined> => {
    try {
      const out = await awsCall("DescribeSnapshots", (http) => client().send(new DescribeSnapshotsCommand({ SnapshotIds: [snapshotId] }), http), { retry, signal: signal });
      const s = out.Snapshots?.find((x) => x.SnapshotId === snapshotId);
      return s ? toEbsSnapshot(s) : undefined;
    } catch (err) {
      if (awsErrorCode(err) === "InvalidSnapshot.NotFound") return undefined;
      throw err;
    }
  };

  const availabilityZoneOf = async (instanceId: string, signal?: AbortSignal): Promise<string> => {
    validateInstanceId(instanceId);
    let out;
    try {
      out = await awsCall("DescribeInstances", (http) => client().send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }), http), { retry, signal: signal });
    } catch (err) {
      if (awsErrorCode(err) === "InvalidInstanceID.NotFound") throw new RunctlError("NOT_FOUND", `Instance ${instanceId} does not exist in ${region}.`, { cause: err });
      throw err;
    }
    const instance = out.Reservations?.flatMap((r) => r.Instances ?? []).find((i) => i.InstanceId === instanceId);
    const az = instance?.Placement?.AvailabilityZone;
    if (!az) throw new RunctlError("NOT_FOUND", `Instance ${instanceId} does not exist in ${region}.`);
    return az;
  };

  /** Waits on a volume; `accept` says whether the volume is where we want it. */
  const waitVolume = async (volumeId: string, what: string, accept: (v: EbsVolume) => boolean, timeoutMs: number, signal: AbortSignal | undefined): Promise<EbsVolume> => {
    const started = performance.now();
    let last: EbsVolume | undefined;
    return pollUntil(
      async () => {
        const v = await describe(volumeId, signal);
        if (!v) {
          // Right after CreateVolume, DescribeVolumes may not know the id yet.
          if (performance.now() - started < NOT_FOUND_GRACE_MS) return undefined;
          throw new RunctlError("NOT_FOUND", `Volume ${volumeId} does not exist in ${region}.`);
        }
        last = v;
        if (v.state === "error") throw new RunctlError("CLOUD_ERROR", `Volume ${volumeId} is in state "error"; delete it and create another.`, { details: { volumeId } });
        if (v.state === "deleting" || v.state === "deleted") throw new RunctlError("NOT_FOUND", `Volume ${volumeId} is being deleted.`, { details: { volumeId } });
        return accept(v) ? v : undefined;
      },
      {
        timeoutMs,
        poll,
        signal,
        describe: () => `volume ${volumeId} to be ${what} (last seen: ${last ? `${last.state}${last.attachments[0] ? `, ${last.attachments[0].state} to ${last.attachments[0].instanceId}` : ""}` : "not found"})`,
        details: { volumeId },
      },
    );
  };

  const isAvailable = (v: EbsVolume): boolean => v.state === "available";
  const isAttachedTo =
    (instanceId?: string) =>
    (v: EbsVolume): boolean =>
      v.state === "in-use" && v.attachments.some((a) => a.state === "attached" && (instanceId === undefined || a.instanceId === instanceId));

  const createValidated = async (input: CreateEbsVolumeOptions, spec: VolumeSpec): Promise<EbsVolume> => {
    const az = validateAvailabilityZone(input.availabilityZone, region);
    const persistent = input.persistent ?? false;
    if (typeof persistent !== "boolean") throw new RunctlError("INVALID_ARGUMENT", `persistent must be true or false.`);
    if (persistent && input.ttlMs !== undefined) throw new RunctlError("INVALID_ARGUMENT", "A persistent volume has no ttlMs: it is kept until deleted with force.");
    const ttlMs = persistent ? null : input.ttlMs === undefined ? DEFAULT_VOLUME_TTL_MS : validateTtlMs(input.ttlMs);
    const runId = input.runId === undefined ? undefined : validateRunIdTag(input.runId);
    const name = input.name === undefined ? (runId !== undefined ? `runctl-${runId}` : `runctl-vol-${randomUUID().slice(0, 8)}`) : validateTagValue("name", input.name);
    checkExtraTags(input.tags);
    const tags = runctlTags({ runId: runId ?? `volume:${name}`.slice(0, 255), owner, now: new Date(), ttlMs, name, persistent, ...(input.tags ? { extra: input.tags } : {}) });
    // One token for every repeat of this call: a throttled-then-retried CreateVolume never makes two volumes.
    const clientToken = randomUUID();

    const out = await awsCall(
      "CreateVolume",
      (http) =>
        client().send(
          new CreateVolumeCommand({
            AvailabilityZone: az,
            VolumeType: spec.type,
            ...(spec.sizeGb !== undefined ? { Size: spec.sizeGb } : {}),
            ...(spec.iops !== undefined ? { Iops: spec.iops } : {}),
            ...(spec.throughputMiBps !== undefined ? { Throughput: spec.throughputMiBps } : {}),
            ...(spec.encrypted !== undefined ? { Encrypted: spec.encrypted } : {}),
            ...(spec.kmsKeyId !== undefined ? { KmsKeyId: spec.kmsKeyId } : {}),
            ...(spec.snapshotId !== undefined ? { SnapshotId: spec.snapshotId } : {}),
            TagSpecifications: [{ ResourceType: "volume", Tags: toAwsTags(tags) }],
            ClientToken: clientToken,
          }),
          http,
        ),
      { retry, signal: input.signal },
    );
    if (!out.VolumeId) throw new RunctlError("CLOUD_ERROR", "CreateVolume returned no volume id.");
    ledgerCreated("volume", out.VolumeId, tags, runId, persistent);
    // CreateVolume's answer may omit tags; they were set atomically with the volume, so report them.
    return toEbsVolume({ ...out, Tags: out.Tags && out.Tags.length > 0 ? out.Tags : toAwsTags(tags) });
  };
  const detach = async (volumeId: string, opts: DetachEbsVolumeOptions): Promise<EbsDetachResult> => {
    validateVolumeId(volumeId);
    const timeoutMs = checkTimeout(opts.timeoutMs, 300_000);
    const vol = await describe(volumeId, opts.signal);
    if (!vol) throw new RunctlError("NOT_FOUND", `Volume ${volumeId} does not exist in ${region}.`);
    const attachment = vol.attachments.find((a) => a.state !== "detached");
    if (!attachment) return { volumeId, state: vol.state, detached: false };
    try {
      await awsCall(
        "DetachVolume",
        (http) => client().send(new DetachVolumeCommand({ VolumeId: volumeId, InstanceId: attachment.instanceId, ...(opts.force ? { Force: true } : {}) }), http),
        { retry, signal: opts.signal },
      );
    } catch (err) {
      // Already detached between our look and the call: the goal is reached.
      if (awsErrorCode(err) !== "IncorrectState") throw err;
    }
    if (!(opts.wait ?? true)) return { volumeId, instanceId: attachment.instanceId, state: "detaching", detached: true };
    const done = await waitVolume(volumeId, "available (detached)", isAvailable, timeoutMs, opts.signal);
    return { volumeId, instanceId: attachment.instanceId, state: done.state, detached: true };
  };

  return {
    region,
    async create(input) {
      const spec: VolumeSpec = validateVolumeSpec(input);
      return createValidated(input, spec);
    },

    async describe(volumeId, opts = {}) {
      validateVolumeId(volumeId);
      return describe(volumeId, opts.signal);
    },

    async waitFor(volumeId, state, opts = {}) {
      validateVolumeId(volumeId);
      if (state !== "available" && state !== "in-use") throw new RunctlError("INVALID_ARGUMENT", `state must be "available" or "in-use", got ${JSON.stringify(state)}.`);
      const timeoutMs = checkTimeout(opts.timeoutMs, 300_000);
      return waitVolume(volumeId, state, state === "available" ? isAvailable : isAttachedTo(), timeoutMs, opts.signal);
    },

    async attach(volumeId, instanceId, opts = {}) {
      validateVolumeId(volumeId);
      validateInstanceId(instanceId);
      const device = validateDeviceName(opts.device ?? "/dev/sdf");
      const timeoutMs = checkTimeout(opts.timeoutMs, 300_000);
      const wait = opts.wait ?? true;
      let vol = await describe(volumeId, opts.signal);
      if (!vol) throw new RunctlError("NOT_FOUND", `Volume ${volumeId} does not exist in ${region}.`);
      const az = await availabilityZoneOf(instanceId, opts.signal);
      if (vol.availabilityZone !== az) {
        throw new RunctlError("INVALID_ARGUMENT", `Volume ${volumeId} is in ${vol.availabilityZone} but instance ${instanceId} is in ${az}; a volume attaches only to instances in its zone (snapshot it and restore it in ${az}).`, {
          details: { volumeId, instanceId, volumeZone: vol.availabilityZone, instanceZone: az },
        });
      }
      const mine = vol.attachments.find((a) => a.instanceId === instanceId && a.state !== "detached" && a.state !== "detaching");
      if (mine) {
        const done = wait && mine.state !== "attached" ? await waitVolume(volumeId, `attached to ${instanceId}`, isAttachedTo(instanceId), timeoutMs, opts.signal) : vol;
        return { volumeId, instanceId, device: mine.device, state: done.attachments.find((a) => a.instanceId === instanceId)?.state ?? mine.state, alreadyAttached: true };
      }
      const other = vol.attachments.find((a) => a.state !== "detached");
      if (other || vol.state === "in-use") {
        throw new RunctlError("RESOURCE_IN_USE", `Volume ${volumeId} is attached to ${other?.instanceId ?? "another instance"}; detach it first.`, { details: { volumeId, attachedTo: other?.instanceId } });
      }
      if (vol.state === "creating") {
        if (!wait) throw new RunctlError("RESOURCE_IN_USE", `Volume ${volumeId} is still being created; wait for it to be available.`, { retryable: true, details: { volumeId } });
        vol = await waitVolume(volumeId, "available", isAvailable, timeoutMs, opts.signal);
      }
      let out;
      try {
        out = await awsCall("AttachVolume", (http) => client().send(new AttachVolumeCommand({ VolumeId: volumeId, InstanceId: instanceId, Device: device }), http), { retry, signal: opts.signal });
      } catch (err) {
        const code = awsErrorCode(err);
        if (code === "VolumeInUse" || code === "IncorrectState") {
          throw new RunctlError("RESOURCE_IN_USE", `Volume ${volumeId} cannot be attached now (${code}): it is attached elsewhere or changing state.`, { cause: err, details: { volumeId, instanceId } });
        }
        throw err;
      }
      if (!wait) return { volumeId, instanceId, device: out.Device ?? device, state: out.State ?? "attaching", alreadyAttached: false };
      const done = await waitVolume(volumeId, `attached to ${instanceId}`, isAttachedTo(instanceId), timeoutMs, opts.signal);
      const attachment = done.attachments.find((a) => a.instanceId === instanceId);
      return { volumeId, instanceId, device: attachment?.device ?? device, state: attachment?.state ?? "attached", alreadyAttached: false };
    },

    detach(volumeId, opts = {}) {
      return detach(volumeId, opts);
    },

    async snapshot(volumeId, opts = {}) {
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
      const tags = runctlTags({ runId: runId ?? `volume:${volumeId}`, owner, now: new Date(), ttlMs, name, persistent, ...(opts.tags ? { extra: opts.tags } : {}) });
      const out = await awsCall(
        "CreateSnapshot",
        (http) =>
          client().send(new CreateSnapshotCommand({ VolumeId: volumeId, Description: description, TagSpecifications: [{ ResourceType: "snapshot", Tags: toAwsTags(tags) }] }), http),
        { retry, signal: opts.signal },
      );
      if (!out.SnapshotId) throw new RunctlError("CLOUD_ERROR", "CreateSnapshot returned no snapshot id.");
      ledgerCreated("snapshot", out.SnapshotId, tags, runId, persistent);
      return toEbsSnapshot({ ...out, Tags: out.Tags && out.Tags.length > 0 ? out.Tags : toAwsTags(tags) });
    },

    async waitForSnapshot(snapshotId, opts = {}) {
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
    },

    async restore(snapshotId, opts) {
      validateSnapshotId(snapshotId);
      // Everything that can be checked without AWS first (zone, tags, spec), then the snapshot itself.
      validateAvailabilityZone(opts.availabilityZone, region);
      let spec = validateVolumeSpec({ ...opts, snapshotId });
      if (opts.persistent && opts.ttlMs !== undefined) throw new RunctlError("INVALID_ARGUMENT", "A persistent volume has no ttlMs: it is kept until deleted with force.");
      checkExtraTags(opts.tags);
      const snap = await describeSnapshot(snapshotId, opts.signal);
      if (!snap) throw new RunctlError("NOT_FOUND", `Snapshot ${snapshotId} does not exist in ${region}.`);
      if (spec.sizeGb !== undefined && spec.sizeGb < snap.sizeGb) {
        throw new RunctlError("INVALID_ARGUMENT", `sizeGb ${spec.sizeGb} is smaller than snapshot ${snapshotId} (${snap.sizeGb} GiB); a restored volume is at least the snapshot's size.`);
      }
      // Checks the type's size range and IOPS ratios against the size the volume will really have.
      if (spec.sizeGb === undefined) spec = validateVolumeSpec({ ...opts, snapshotId, sizeGb: snap.sizeGb });
      if (snap.state !== "completed") warn(`Snapshot ${snapshotId} is ${snap.state}; the volume may be slow until its blocks are loaded.`);
      return createValidated(opts, spec);
    },

    async delete(volumeId, opts = {}) {
      validateVolumeId(volumeId);
      const timeoutMs = checkTimeout(opts.timeoutMs, 300_000);
      const vol = await describe(volumeId, opts.signal);
      if (!vol || vol.state === "deleted" || vol.state === "deleting") return { id: volumeId, deleted: false, detached: false };
      if (vol.persistent && !opts.force) {
        throw new RunctlError("RESOURCE_IN_USE", `Volume ${volumeId} is persistent (runctl:persistent=true); pass force: true to delete it.`, { details: { volumeId } });
      }
      const attachment = vol.attachments.find((a) => a.state !== "detached");
      let detached = false;
      if (attachment || vol.state === "in-use") {
        if (!opts.force) {
          throw new RunctlError("RESOURCE_IN_USE", `Volume ${volumeId} is attached to ${attachment?.instanceId ?? "an instance"}; detach it first or pass force: true.`, {
            details: { volumeId, attachedTo: attachment?.instanceId },
          });
        }
        warn(`Volume ${volumeId} is attached to ${attachment?.instanceId ?? "an instance"}; force-detaching it before deleting.`);
        await detach(volumeId, { force: true, wait: true, timeoutMs, ...(opts.signal ? { signal: opts.signal } : {}) });
        detached = true;
      }
      try {
        await awsCall("DeleteVolume", (http) => client().send(new DeleteVolumeCommand({ VolumeId: volumeId }), http), { retry, signal: opts.signal });
      } catch (err) {
        const code = awsErrorCode(err);
        if (code === "InvalidVolume.NotFound") {
          ledgerDeleted("volume", volumeId);
          return { id: volumeId, deleted: false, detached };
        }
        if (code === "VolumeInUse") throw new RunctlError("RESOURCE_IN_USE", `Volume ${volumeId} is in use (attached); detach it first.`, { cause: err, details: { volumeId } });
        throw err;
      }
      ledgerDeleted("volume", volumeId);
      return { id: volumeId, deleted: true, detached };
    },

    async deleteSnapshot(snapshotId, opts = {}) {
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
    },

    async list(opts = {}) {
      const want = opts.owner ?? "all";
      const out: EbsVolume[] = [];
      let token: string | undefined;
      do {
        const page = await awsCall(
          "DescribeVolumes",
          (http) =>
            client().send(new DescribeVolumesCommand({ Filters: [{ Name: "tag-key", Values: [TAG.runId] }], MaxResults: 500, ...(token ? { NextToken: token } : {}) }), http),
          { retry, signal: opts.signal },
        );
        for (const v of page.Volumes ?? []) {
          const vol = toEbsVolume(v);
          // The filter is the server's; the tag check is ours.
          if (vol.runId === undefined) continue;
          if (want !== "all" && vol.tags[TAG.owner] !== want) continue;
          out.push(vol);
        }
        token = page.NextToken || undefined;
      } while (token);
      return out;
    },

    async availabilityZoneOf(instanceId, opts = {}) {
      return availabilityZoneOf(instanceId, opts.signal);
    },
  };
}
