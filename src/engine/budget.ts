import { budgetRefusal, statedPriceUnknownError } from "../cost/budget-check.js";
import type { Provider, ProviderEstimate } from "../providers/types.js";
import type { RunContext } from "./run-context.js";
import type { LaunchedRun } from "./run-session.js";

/** Refuses a run whose estimate exceeds `.budget({ maxUsd })`, before anything is created. */
export async function checkBudget(ctx: RunContext): Promise<void> {
  const { spec, resources } = ctx;
  const provider = resources.provider;
  const maxUsd = spec.budget.maxUsd;
  if (maxUsd === null) return;
  // An unknown price throws PRICE_UNKNOWN here: never counted as $0 against a budget.
  const single = provider.estimate ? await provider.estimate({ signal: ctx.prelaunch.signal }) : providerPrice(provider);
  const refusal = budgetRefusal({ hourlyPriceUsd: single.hourlyPriceUsd, basis: single.basis, nodes: spec.nodes?.count ?? 1, maxUsd, maxDurationMs: spec.budget.maxDurationMs });
  if (refusal) throw refusal;
}

/** The price a provider without `estimate()` states in its plan (none: free); PRICE_UNKNOWN when its plan says unknown. */
function providerPrice(provider: Provider): ProviderEstimate {
  const plan = provider.plan?.();
  if (plan && plan.hourlyPriceUsd === undefined) throw statedPriceUnknownError(provider.name);
  return { hourlyPriceUsd: plan?.hourlyPriceUsd ?? 0, basis: "provider" };
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
