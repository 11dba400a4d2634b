import { EC2Client, type Filter, type Instance } from "@aws-sdk/client-ec2";
import type { SweptResource } from "../sweep-types.js";
import type { Storage } from "../../storage/types.js";
import { type PollOptions } from "../../aws/aws-poll.js";
import type { AwsRetryOptions } from "../../aws/aws-call.js";
import { TAG } from "./tags.js";
/** Instance states that count as a live machine of a run (it may still use the run's volumes, groups and key). */
export const LIVE_STATES = new Set(["pending", "running", "stopping", "stopped"]);
/** The server-side filter every Describe call uses; the tag is checked again on each result. */
export const RUNCTL_TAG_FILTER: Filter = { Name: "tag-key", Values: [TAG.runId] };

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
  readonly instanceWaitMs?: number | undefined;
  /** Wait for volumes still attached to swept instances to come free. @defaultValue 180000 */
  readonly volumeWaitMs?: number | undefined;
  /** Repeats of DeleteSecurityGroup while it fails with `DependencyViolation` (a network interface lingers). @defaultValue 6 */
  readonly dependencyRetries?: number | undefined;
  /** Pauses between checks and repeats. @defaultValue `{ initialMs: 2000, maxMs: 15000 }` */
  readonly poll?: PollOptions | undefined;
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
  readonly client?: EC2Client | undefined;
  /** Only resources whose `runctl:owner` is this; `"all"` for every owner. @defaultValue `defaultOwner()` */
  readonly owner?: string | undefined;
  /** Report only: no mutating call at all. @defaultValue false */
  readonly dryRun?: boolean | undefined;
  /**
   * Sweep expired resources even when their run looks alive (an instance of it is pending,
   * running or stopping and the run is not known to be over). Without it they are kept and
   * reported. @defaultValue false
   */
  readonly force?: boolean | undefined;
  /** "Now", for expiry and the grace period. @defaultValue the current time */
  readonly now?: Date | undefined;
  /** Resources without a live instance are kept this long after `runctl:created-at` (their run may still be launching). @defaultValue 900000 (15 min) */
  readonly graceMs?: number | undefined;
  /** Storages whose `runctl-staging/<scope>/` folders (the SSM transport's) are swept too. @defaultValue `[]` */
  readonly staging?: readonly Storage[] | undefined;
  /** Whether a run is over; `undefined` when unknown. @defaultValue `runEndedFromJournal` (the local journal's exit event) */
  readonly runEnded?: ((runId: string) => boolean | undefined) | undefined;
  /** Repeats of throttled EC2 calls. @defaultValue `{ retries: 5, minDelayMs: 250, maxDelayMs: 8000 }` */
  readonly retry?: AwsRetryOptions | undefined;
  /** Waits between steps. @defaultValue see {@link SweepTiming} */
  readonly timing?: SweepTiming | undefined;
  /** Called with things worth knowing that do not fail the sweep. @defaultValue ignore them */
  readonly onWarning?: ((message: string) => void) | undefined;
  /** Aborts the sweep with ABORTED (what was deleted so far is in the ledger). */
  readonly signal?: AbortSignal | undefined;
}

export interface VolumeCandidate {
  readonly resource: SweptResource;
  /** Instances it is attached to (not `detached`). */
  attachedTo: string[];
  state: string;
}
