import type { SweepReport, SweptResource } from "../index.js";

/** One resource a sweep looked at: the SDK's {@link SweptResource}. */
export type SweepResource = SweptResource;
export type { SweepReport };

/**
 * What `runctl sweep` hands the sweep implementation.
 *
 * @example
 * ```ts
 * const request: SweepRequest = { region: "us-east-1", dryRun: true, force: false, owner: undefined, signal: new AbortController().signal };
 * ```
 */
export interface SweepRequest {
  /** `--region`; undefined: every region in the local ledger, and AWS_REGION. */
  readonly region: string | undefined;
  /** `--dry-run`: report only. */
  readonly dryRun: boolean;
  /** `--force`: also sweep expired resources whose run looks alive. */
  readonly force: boolean;
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
