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
    /** The provider's expected price per hour, in US dollars. */
    readonly hourlyUsd: number;
    /** The `.budget()` maximum duration; null when none is set. */
    readonly maxDurationMs: number | null;
    /** `hourlyUsd` times the maximum duration in hours; null when no maximum duration is set. */
    readonly maxTotalUsd: number | null;
    /** Where the price comes from (`on-demand catalog 2026-11-01`, `spot market us-east-1a`, `given`). */
    readonly basis: string;
    /** The `.budget()` money limit; null when none is set. */
    readonly budgetUsd: number | null;
    /** False when `maxTotalUsd` exceeds `budgetUsd`: `.train()` would refuse the run (BUDGET_EXCEEDED). */
    readonly withinBudget: boolean;
  };
}

/** Builds the {@link PlanSummary}. Reads local files only; creates nothing. */
export async function summarizePlan(state: PlanState, script: string | undefined, options: { readonly runId?: string | undefined; readonly graceMs?: number | undefined } = {}): Promise<PlanSummary> {
  const batch = state.provider.batch !== undefined;
  const providerPlan = (await state.provider.plan?.(
    batch ? { runId: options.runId ?? "<run-id>", nodes: state.nodes?.count ?? 1, maxDurationMs: state.budget?.maxDurationMs ?? undefined, graceMs: options.graceMs ?? 30_000, recover: state.recover !== undefined, agentPathOn } : undefined,
  )) ?? { resources: [], hourlyPriceUsd: 0 };
  // The live price (spot market) when the provider can tell; the catalog's when the cloud cannot be asked.
  const estimate = state.provider.estimate
    ? await state.provider.estimate().catch((err: unknown) => ({ hourlyPriceUsd: providerPlan.hourlyPriceUsd, basis: `catalog (live price unavailable: ${(err as Error).message})` }))
    : { hourlyPriceUsd: providerPlan.hourlyPriceUsd, basis: providerPlan.hourlyPriceUsd > 0 ? "provider" : "free (your own machine)" };
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
  // A gang pays for every node.
  const hourlyUsd = estimate.hourlyPriceUsd * (nodes?.count ?? 1);
  const maxTotalUsd = maxDurationMs === null ? null : (hourlyUsd * maxDurationMs) / 3_600_000;
  const budgetUsd = state.budget?.maxUsd ?? null;
  return {
    provider: state.provider.name,
    steps,
    resources: nodes && !batch ? Array.from({ length: nodes.count }, (_, rank) => providerPlan.resources.map((r) => ({ ...r, description: `node ${rank}: ${r.description}` }))).flat() : providerPlan.resources,
    ...(sync ? { sync: { root: sync.root, files: sync.files, bytes: sync.bytes, largest: sync.largest, warnings: sync.warnings, ...(sync.tooLarge ? { tooLarge: sync.tooLarge } : {}) } } : {}),
    ...(providerPlan.batchScript !== undefined ? { batchScript: providerPlan.batchScript } : {}),
    checkpoints: { storage: storage?.uri ?? null, keep: state.checkpoints?.keep ?? null },
    estimate: {
      hourlyUsd,
      maxDurationMs,
      maxTotalUsd,
      basis: estimate.basis,
      budgetUsd,
      withinBudget: budgetUsd === null || maxTotalUsd === null || maxTotalUsd <= budgetUsd,
    },
  };
}
