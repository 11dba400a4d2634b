import { DescribeInstancesCommand, DescribeSnapshotsCommand, DescribeVolumesCommand, EC2Client } from "@aws-sdk/client-ec2";
import { RunctlError } from "../../../errors/runctl-error.js";
import { recordResourceCreated, recordResourceDeleted, type ResourceKind } from "../../../ledger/resource-ledger.js";
import { TAG, defaultOwner } from "../tags.js";
import { pollUntil, resolvePollOptions, type ResolvedPollOptions } from "../../../aws/aws-poll.js";
import { AWS_SDK_MAX_ATTEMPTS, awsCall, resolveAwsRetry, type ResolvedAwsRetryOptions } from "../../../aws/aws-call.js";
import { awsErrorCode } from "../../../aws/aws-errors.js";
import type { EbsSnapshot, EbsVolume } from "./ebs-types.js";
import { validateInstanceId, validateRegion, validateTagValue } from "./validate-volume.js";
import { toEbsSnapshot, toEbsVolume } from "./ebs-convert.js";
import type { EbsVolumesOptions } from "./ebs-options.js";


/** Default time-to-live of a non-persistent volume made outside a run: one day. */
export const DEFAULT_VOLUME_TTL_MS = 24 * 3_600_000;
/** Default time-to-live of a non-persistent snapshot: one week. */
export const DEFAULT_SNAPSHOT_TTL_MS = 7 * 24 * 3_600_000;
/** How long a volume id may be unknown to DescribeVolumes right after creation (EC2 is eventually consistent). */
const NOT_FOUND_GRACE_MS = 15_000;

/**
 * What every EBS operation of one {@link ebsVolumes} shares: the region, owner tag, retry and poll
 * pacing, the (lazily created) client, the ledger, and the describe/wait helpers.
 *
 * @example
 * ```ts
 * const ctx = ebsContext({ region: "us-east-1" });
 * const vol = await ctx.describe("vol-0123456789abcdef0");
 * ```
 */
export interface EbsContext {
  readonly region: string;
  readonly owner: string;
  readonly retry: ResolvedAwsRetryOptions;
  readonly poll: ResolvedPollOptions;
  /** Hands a warning to `onWarning` (a throwing callback is ignored). */
  readonly warn: (message: string) => void;
  /** The EC2 client, created on first use. */
  readonly client: () => EC2Client;
  readonly ledgerCreated: (kind: ResourceKind, id: string, tags: Record<string, string>, runId: string | undefined, persistent: boolean) => void;
  readonly ledgerDeleted: (kind: ResourceKind, id: string) => void;
  /** The volume, or undefined when EC2 does not know it. */
  readonly describe: (volumeId: string, signal?: AbortSignal) => Promise<EbsVolume | undefined>;
  /** The snapshot, or undefined when EC2 does not know it. */
  readonly describeSnapshot: (snapshotId: string, signal?: AbortSignal) => Promise<EbsSnapshot | undefined>;
  /** The zone of an instance; NOT_FOUND when there is none. */
  readonly availabilityZoneOf: (instanceId: string, signal?: AbortSignal) => Promise<string>;
  /** Waits until `accept(volume)`; PROVISION_TIMEOUT after `timeoutMs`. */
  readonly waitVolume: (volumeId: string, what: string, accept: (v: EbsVolume) => boolean, timeoutMs: number, signal: AbortSignal | undefined) => Promise<EbsVolume>;
  readonly isAvailable: (v: EbsVolume) => boolean;
  readonly isAttachedTo: (instanceId?: string) => (v: EbsVolume) => boolean;
}

/**
 * Validates {@link EbsVolumesOptions} and builds the shared {@link EbsContext}.
 *
 * @example
 * ```ts
 * const ctx = ebsContext({ region: "eu-west-1", retry: { retries: 3 } });
 * ```
 */
export function ebsContext(options: EbsVolumesOptions): EbsContext {
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
        runId,
        createdAt: tags[TAG.createdAt] ?? new Date().toISOString(),
        expiresAt: tags[TAG.expiresAt],
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

  return { region, owner, retry, poll, warn, client, ledgerCreated, ledgerDeleted, describe, describeSnapshot, availabilityZoneOf, waitVolume, isAvailable, isAttachedTo };
}
