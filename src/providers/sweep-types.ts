/**
 * Kinds of leftovers a sweep looks for.
 *
 * @example
 * ```ts
 * const kind: SweptResourceKind = "security-group";
 * ```
 */
export type SweptResourceKind = "instance" | "volume" | "snapshot" | "key-pair" | "security-group" | "s3-prefix" | "job";

/**
 * One resource a sweep looked at.
 *
 * @example
 * ```ts
 * const r: SweptResource = { kind: "volume", id: "vol-0123456789abcdef0", runId: "20261121-152117-utfo5u", owner: "me@laptop", reason: "run is over" };
 * ```
 */
export interface SweptResource {
  /** What it is. */
  readonly kind: SweptResourceKind;
  /** The cloud's id: `i-…`, `vol-…`, a key pair's name, `sg-…`, or `s3://bucket/prefix/runctl-staging/<scope>/`. */
  readonly id: string;
  /** Its `runctl:run-id`. */
  readonly runId: string;
  /** Its `runctl:owner`. */
  readonly owner: string;
  /** Why it is (or would be) deleted, or why it is kept, in words (`expired at …`, `run is over`, `persistent`). */
  readonly reason: string;
}

/**
 * A runctl resource the sweep did not delete, and why.
 *
 * @example
 * ```ts
 * for (const { resource, reason } of report.kept) console.log(`kept ${resource.id}: ${reason}`);
 * ```
 */
export interface KeptResource {
  /** The resource. */
  readonly resource: SweptResource;
  /** Why it was kept (`persistent`, `in grace period until …`, `attached to i-…`, `in use`, `owned by …`). */
  readonly reason: string;
}

/**
 * A deletion that failed.
 *
 * @example
 * ```ts
 * for (const { resource, message } of report.errors) console.error(resource.id, message);
 * ```
 */
export interface SweepFailure {
  /** The resource it was for. */
  readonly resource: SweptResource;
  /** What went wrong. */
  readonly message: string;
}

/**
 * What a sweep found and did. Provider-neutral: no cloud SDK types.
 *
 * - `found`: every resource the rules say should go (in a dry run: what would be deleted).
 * - `deleted`: those actually deleted (always empty in a dry run).
 * - `kept`: runctl resources left alone, with the reason (persistent, still in use, run not over,
 *   another owner, or still attached after the sweep's waits).
 * - `errors`: deletions that failed for other reasons.
 *
 * @example
 * ```ts
 * const report = await Runctl.sweep({ provider: ec2({ region: "us-east-1" }), dryRun: true });
 * for (const r of report.found) console.log(`would delete ${r.kind} ${r.id}: ${r.reason}`);
 * ```
 */
export interface SweepReport {
  /** Whether this was a dry run (nothing deleted, no mutating call made). */
  readonly dryRun: boolean;
  /** Resources the rules say should go. */
  readonly found: readonly SweptResource[];
  /** Resources deleted. */
  readonly deleted: readonly SweptResource[];
  /** Resources left alone, with the reason. */
  readonly kept: readonly KeptResource[];
  /** Deletions that failed. */
  readonly errors: readonly SweepFailure[];
}
