import { RunctlError } from "../errors/runctl-error.js";
import type { RunContext } from "./run-context.js";
import type { LaunchedRun } from "./run-session.js";

/** Refuses a run whose estimate exceeds `.budget({ maxUsd })`, before anything is created. */
export async function checkBudget(ctx: RunContext): Promise<void> {
  const { spec, resources } = ctx;
  const provider = resources.provider;
  const maxUsd = spec.budget.maxUsd;
  if (maxUsd === null) return;
  const single = provider.estimate ? await provider.estimate({ signal: ctx.prelaunch.signal }) : { hourlyPriceUsd: provider.plan?.().hourlyPriceUsd ?? 0, basis: "provider" };
  // A gang pays for every node.
  const estimate = { hourlyPriceUsd: single.hourlyPriceUsd * (spec.nodes?.count ?? 1), basis: spec.nodes ? `${single.basis}, ${spec.nodes.count} nodes` : single.basis };
  const maxDurationMs = spec.budget.maxDurationMs;
  if (maxDurationMs !== null && (estimate.hourlyPriceUsd * maxDurationMs) / 3_600_000 > maxUsd) {
    const total = (estimate.hourlyPriceUsd * maxDurationMs) / 3_600_000;
    throw new RunctlError(
      "BUDGET_EXCEEDED",
      `The run could cost $${total.toFixed(2)} ($${estimate.hourlyPriceUsd}/h, ${estimate.basis}, for ${maxDurationMs / 3_600_000} h), more than its budget of $${maxUsd}; nothing was created. Raise maxUsd or lower maxDurationMs.`,
      { details: { estimateUsd: total, maxUsd, hourlyUsd: estimate.hourlyPriceUsd } },
    );
  }
}

/** While following: reports the accrued cost and stops the run once it reaches `maxUsd`. Returns the stop function. */
export function watchCost(ctx: RunContext, run: LaunchedRun): () => void {
  const { session, spec } = ctx;
  const maxUsd = spec.budget.maxUsd;
  const timer = setInterval(() => {
    session.emitCost();
    if (maxUsd !== null && !session.budgetExceeded && session.meter.usd() >= maxUsd) {
      session.budgetExceeded = true;
      session.emit({ type: "warning", code: "BUDGET_EXCEEDED", message: `The run has cost $${session.meter.usd().toFixed(2)}, reaching its budget of $${maxUsd}: stopping it.` });
      void session.signal(run, "interrupt").catch(() => {});
    }
  }, spec.costIntervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
