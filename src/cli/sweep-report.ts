/**
 * One resource a sweep looked at.
 *
 * @example
 * ```ts
 * const r: SweepResource = { kind: "volume", id: "vol-0abc", runId: "20261121-152117-utfo5u", owner: "me@laptop", reason: "run is over" };
 * ```
 */
export interface SweepResource {
  /** What it is (`instance`, `volume`, `security-group`, ...). */
  readonly kind: string;
  /** The cloud's id (`i-…`, `vol-…`). */
  readonly id: string;
  /** The run it was made for (its `runctl:run-id` tag). */
  readonly runId: string;
  /** Who made it (its owner tag). */
  readonly owner: string;
  /** Why the sweep considers it (expired, orphaned, its run ended...). */
  readonly reason: string;
}

/**
 * What a sweep found and did. With `dryRun`, `deleted` is empty and `found` is what would go.
 *
 * @example
 * ```ts
 * const report: SweepReport = { dryRun: true, found: [], deleted: [], kept: [], errors: [] };
 * ```
 */
export interface SweepReport {
  /** Whether nothing was deleted. */
  readonly dryRun: boolean;
  /** Resources runctl made that are eligible for deletion. */
  readonly found: readonly SweepResource[];
  /** Resources deleted (empty on a dry run). */
  readonly deleted: readonly SweepResource[];
  /** Resources left alone, with why (persistent, still in use, not expired). */
  readonly kept: readonly { readonly resource: SweepResource; readonly reason: string }[];
  /** Resources whose deletion failed. */
  readonly errors: readonly { readonly resource: SweepResource; readonly message: string }[];
}

/**
 * What `runctl sweep` hands the sweep implementation.
 *
 * @example
 * ```ts
 * const request: SweepRequest = { region: "us-east-1", dryRun: true, owner: undefined, signal: new AbortController().signal };
 * ```
 */
export interface SweepRequest {
  /** `--region`; undefined for the SDK's default region. */
  readonly region: string | undefined;
  /** `--dry-run`: report only. */
  readonly dryRun: boolean;
  /** `--owner`; undefined for the caller's own resources only, `all` for everyone's. */
  readonly owner: string | undefined;
  /** SIGINT. */
  readonly signal: AbortSignal;
}

/**
 * The sweep implementation `runctl sweep` calls: the SDK's by default, a fake in tests.
 *
 * @example
 * ```ts
 * const fake: SweepFn = async ({ dryRun }) => ({ dryRun, found: [], deleted: [], kept: [], errors: [] });
 * ```
 */
export type SweepFn = (request: SweepRequest) => Promise<SweepReport>;
