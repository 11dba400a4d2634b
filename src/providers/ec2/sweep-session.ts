import type { ResolvedAwsRetryOptions } from "../../aws/aws-call.js";
import { EC2Client } from "@aws-sdk/client-ec2";
import { RunctlError, abortError } from "../../errors/runctl-error.js";
import type { KeptResource, SweepFailure, SweptResource } from "../sweep-types.js";
import { recordResourceDeleted, type ResourceKind } from "../../ledger/resource-ledger.js";
import { resolvePollOptions, type ResolvedPollOptions } from "../../aws/aws-poll.js";
import { AWS_SDK_MAX_ATTEMPTS, resolveAwsRetry } from "../../aws/aws-call.js";
import { validateRegion } from "./ebs/validate-volume.js";
import { DEFAULT_SWEEP_GRACE_MS, runEndedFromJournal } from "./sweep-rules.js";
import { defaultOwner } from "./tags.js";
import { type SweepEc2Options } from "./sweep-options.js";

/**
 * One sweep's validated settings, its EC2 client, and the report being filled in (`found`,
 * `deleted`, `kept`, `errors`), shared by the describe, judge and delete steps.
 *
 * @example
 * ```ts
 * const s = openSweepSession({ region: "us-east-1", dryRun: true });
 * ```
 */
export interface SweepSession {
  readonly region: string;
  readonly owner: string;
  readonly graceMs: number;
  readonly now: Date;
  readonly timing: { readonly instanceWaitMs: number; readonly volumeWaitMs: number; readonly dependencyRetries: number };
  readonly poll: ResolvedPollOptions;
  readonly retry: ResolvedAwsRetryOptions;
  readonly dryRun: boolean;
  readonly force: boolean;
  readonly signal: AbortSignal | undefined;
  readonly client: EC2Client;
  readonly warn: (message: string) => void;
  /** Whether a run is known to be over (cached per run; a throwing callback counts as unknown). */
  readonly runEnded: (runId: string) => boolean | undefined;
  readonly found: SweptResource[];
  readonly deleted: SweptResource[];
  readonly kept: KeptResource[];
  readonly errors: SweepFailure[];
  readonly ledgerDeleted: (kind: ResourceKind, id: string) => void;
  /** Records a failure (ABORTED instead once the signal fired). */
  readonly failed: (resource: SweptResource, err: unknown) => void;
}

/**
 * Validates {@link SweepEc2Options} (INVALID_ARGUMENT) and opens a {@link SweepSession}.
 *
 * @example
 * ```ts
 * const s = openSweepSession({ region: "us-east-1", owner: "all" });
 * ```
 */
export function openSweepSession(options: SweepEc2Options): SweepSession {
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
  const retry: ResolvedAwsRetryOptions = resolveAwsRetry(options.retry);
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

  return { region, owner, graceMs, now, timing, poll, retry, dryRun, force, signal, client, warn, runEnded, found, deleted, kept, errors, ledgerDeleted, failed };
}
