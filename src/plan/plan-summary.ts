import { budgetRefusal, statedPriceUnknownError } from "../cost/budget-check.js";
import { isRunctlError, type RunctlError, type RunctlErrorCode } from "../errors/runctl-error.js";
import { agentPathOn } from "../agent/install-agent.js";
import type { PlannedResource } from "../providers/types.js";
import { planSync, type SyncPlan } from "../sync/sync-tree.js";
import { checkpointStorageOf } from "./build-run-spec.js";
import type { PlanState } from "./plan-types.js";

/**
 * The dry run of a plan: what would happen, what would be created, what it would cost.
 *
 * @example
 * ```ts
 * const s = await plan.plan("train.py");
 * console.log(s.steps, s.sync?.files, s.estimate.hourlyUsd);
 * ```
 */
export interface PlanSummary {
  /** The provider's name. */
  readonly provider: string;
  /** The steps in order, in words. */
  readonly steps: readonly string[];
  /** Resources the provider would create, with their tags. */
  readonly resources: readonly PlannedResource[];
  /** What the sync would send (no machine is contacted). */
  readonly sync?: Pick<SyncPlan, "root" | "files" | "bytes" | "largest" | "warnings" | "tooLarge"> | undefined;
  /** Where checkpoints would be committed. */
  readonly checkpoints: {
    /** The storage's URI; null when none is configured and the machine cannot share the local one. */
    readonly storage: string | null;
    /** How many committed checkpoints are kept; null to keep all. */
    readonly keep: number | null;
  };
  /** A batch provider's job script, exactly as it would be submitted (Slurm: the sbatch script). */
  readonly batchScript?: string | undefined;
  /** Cost estimate: price per hour, and the total when a maximum duration is set. */
  readonly estimate: {
    /** The provider's expected price per hour (every node of a gang), in US dollars; null when no price is known (never 0 for an unknown price). */
    readonly hourlyUsd: number | null;
    /** The `.budget()` maximum duration; null when none is set. */
    readonly maxDurationMs: number | null;
    /** `hourlyUsd` times the maximum duration in hours; null when no maximum duration is set or no price is known. */
    readonly maxTotalUsd: number | null;
    /** Where the price comes from (`on-demand catalog 2026-11-01`, `spot market us-east-1a`, `given`), or why it is `unknown: ...`. */
    readonly basis: string;
    /** The `.budget()` money limit; null when none is set. */
    readonly budgetUsd: number | null;
    /** False when `.train()` would refuse the run for its budget: the estimate exceeds `budgetUsd` (BUDGET_EXCEEDED) or no price is known (PRICE_UNKNOWN); see `refusal`. */
    readonly withinBudget: boolean;
  };
  /**
   * Why `.train()` would refuse this plan before creating anything (BUDGET_EXCEEDED, PRICE_UNKNOWN),
   * with the code and message it would throw; null when it would not refuse for its price.
   */
  readonly refusal: { readonly code: RunctlErrorCode; readonly message: string } | null;
}

/** Builds the {@link PlanSummary}. Reads local files only; creates nothing. */
export async function summarizePlan(state: PlanState, script: string | undefined, options: { readonly runId?: string | undefined; readonly graceMs?: number | undefined } = {}): Promise<PlanSummary> {
  const batch = state.provider.batch !== undefined;
  const providerPlan = (await state.provider.plan?.(
    batch ? { runId: options.runId ?? "<run-id>", nodes: state.nodes?.count ?? 1, maxDurationMs: state.budget?.maxDurationMs ?? undefined, graceMs: options.graceMs ?? 30_000, recover: state.recover !== undefined, agentPathOn } : undefined,
  )) ?? { resources: [], hourlyPriceUsd: 0 };
  const price = await priceOf(state, providerPlan.hourlyPriceUsd);
  const storage = checkpointStorageOf(state);
  const sync = state.sync
    ? await planSync({ localDir: state.sync.dir, ignore: state.sync.options.ignore ?? [], hash: false, ...(state.sync.options.maxBytes ? { maxBytes: state.sync.options.maxBytes } : {}), ...(state.sync.options.maxFiles ? { maxFiles: state.sync.options.maxFiles } : {}) })
    : undefined;
  const nodes = state.nodes && state.nodes.count > 1 ? state.nodes : undefined;
  const steps = [
    ...(providerPlan.steps?.before ?? []),
    batch ? undefined : nodes ? `provision ${nodes.count} machines from ${state.provider.name} as one gang (all or nothing)` : `provision a machine from ${state.provider.name}`,
    ...(sync ? [`sync ${sync.files} files (${sync.bytes} bytes) from ${sync.root}`] : []),
    ...(state.container ? [`use the image ${state.container.image} (${state.container.runtime}, pull ${state.container.pull}, gpus ${String(state.container.gpus)}); setup and training run in it`] : []),
    ...(providerPlan.steps?.after ?? []),
    ...(state.setup?.requirements ? [`install ${state.setup.requirements} into a cached venv`] : []),
    ...(state.setup?.commands ?? []).map((c) => `run setup command: ${c}`),
    ...state.data.map((d) => `fetch ${d.uri} into ${d.to}`),
    ...(state.resumeFrom !== undefined ? ["restore the latest verified checkpoint of the resumed run"] : []),
    nodes
      ? `train ${script ?? "(script given to .train())"} on ${nodes.count} nodes${nodes.launcher === "torchrun" ? ` with torchrun (${nodes.procsPerNode} process(es) per node, rendezvous on node 0 port ${nodes.masterPort})` : ""}`
      : `train ${script ?? "(script given to .train())"}`,
    ...(storage ? [`commit checkpoints to ${storage.uri}${state.checkpoints?.keep ? `, keeping ${state.checkpoints.keep}` : ""}`] : []),
    batch ? "the job ends with its agents (one still queued or running after the run is cancelled)" : `release the machine`,
  ].filter((s): s is string => s !== undefined);
  const maxDurationMs = state.budget?.maxDurationMs ?? null;
  const budgetUsd = state.budget?.maxUsd ?? null;
  // A gang pays for every node.
  const hourlyUsd = price.hourlyPriceUsd === undefined ? null : price.hourlyPriceUsd * (nodes?.count ?? 1);
  const maxTotalUsd = maxDurationMs === null || hourlyUsd === null ? null : (hourlyUsd * maxDurationMs) / 3_600_000;
  // What .train() would throw (engine/budget.ts): an unknown price only matters with a money budget.
  const refusal =
    budgetUsd === null
      ? undefined
      : price.hourlyPriceUsd === undefined
        ? price.unknown
        : budgetRefusal({ hourlyPriceUsd: price.hourlyPriceUsd, basis: price.basis, nodes: nodes?.count ?? 1, maxUsd: budgetUsd, maxDurationMs });
  return {
    provider: state.provider.name,
    steps,
    resources: nodes && !batch ? Array.from({ length: nodes.count }, (_, rank) => providerPlan.resources.map((r) => ({ ...r, description: `node ${rank}: ${r.description}` }))).flat() : providerPlan.resources,
    ...(sync ? { sync: { root: sync.root, files: sync.files, bytes: sync.bytes, largest: sync.largest, warnings: sync.warnings, ...(sync.tooLarge ? { tooLarge: sync.tooLarge } : {}) } } : {}),
    ...(providerPlan.batchScript !== undefined ? { batchScript: providerPlan.batchScript } : {}),
    checkpoints: { storage: storage?.uri ?? null, keep: state.checkpoints?.keep ?? null },
    estimate: { hourlyUsd, maxDurationMs, maxTotalUsd, basis: price.basis, budgetUsd, withinBudget: refusal === undefined && (budgetUsd === null || hourlyUsd !== null) },
    refusal: refusal ? { code: refusal.code, message: refusal.message } : null,
  };
}

/** A price, or why none is known (the error `.train()` would throw when a budget needs it). */
interface PlannedPrice {
  readonly hourlyPriceUsd: number | undefined;
  readonly basis: string;
  readonly unknown?: RunctlError | undefined;
}

/**
 * The live price (spot market) when the provider can tell; its plan's (the catalog's) when the
 * cloud cannot be asked; never 0 for a price nobody knows.
 */
async function priceOf(state: PlanState, planned: number | undefined): Promise<PlannedPrice> {
  const provider = state.provider;
  if (!provider.estimate) {
    if (planned === undefined) {
      const unknown = statedPriceUnknownError(provider.name);
      return { hourlyPriceUsd: undefined, basis: `unknown: ${unknown.message}`, unknown };
    }
    return { hourlyPriceUsd: planned, basis: planned > 0 ? "provider" : "free (your own machine)" };
  }
  try {
    return await provider.estimate();
  } catch (err) {
    if (isRunctlError(err) && err.code === "PRICE_UNKNOWN") return { hourlyPriceUsd: undefined, basis: `unknown: ${err.message}`, unknown: err };
    const why = `live price unavailable: ${(err as Error).message}`;
    return planned === undefined ? { hourlyPriceUsd: undefined, basis: `unknown (${why})` } : { hourlyPriceUsd: planned, basis: `catalog (${why})` };
  }
}
