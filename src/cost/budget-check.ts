import { RunctlError } from "../errors/runctl-error.js";

/** Inputs of {@link budgetRefusal}: one machine's price and the run's shape and budget. */
export interface BudgetCheckInput {
  /** One machine's price per hour in USD. */
  readonly hourlyPriceUsd: number;
  /** Where the price comes from (`given`, `on-demand catalog 2026-11-01`, `spot market us-east-1a`). */
  readonly basis: string;
  /** Machines the run pays for at once (a gang pays for every node). */
  readonly nodes: number;
  /** `.budget({ maxUsd })`; null when none is set. */
  readonly maxUsd: number | null;
  /** `.budget({ maxDurationMs })`; null when none is set. */
  readonly maxDurationMs: number | null;
}

/**
 * The BUDGET_EXCEEDED error `.train()` throws before anything is created when the run could cost
 * more than its budget, or undefined when it fits. `.plan()` calls the same function, so that both
 * give the same code and message.
 *
 * @example
 * ```ts
 * const refusal = budgetRefusal({ hourlyPriceUsd: 1.006, basis: "given", nodes: 1, maxUsd: 5, maxDurationMs: 10 * 3600_000 });
 * if (refusal) throw refusal;
 * ```
 */
export function budgetRefusal(input: BudgetCheckInput): RunctlError | undefined {
  const { maxUsd, maxDurationMs } = input;
  if (maxUsd === null || maxDurationMs === null) return undefined;
  const hourlyUsd = input.hourlyPriceUsd * input.nodes;
  const basis = input.nodes > 1 ? `${input.basis}, ${input.nodes} nodes` : input.basis;
  const total = (hourlyUsd * maxDurationMs) / 3_600_000;
  if (total <= maxUsd) return undefined;
  return new RunctlError(
    "BUDGET_EXCEEDED",
    `The run could cost $${total.toFixed(2)} ($${hourlyUsd}/h, ${basis}, for ${maxDurationMs / 3_600_000} h), more than its budget of $${maxUsd}; nothing was created. Raise maxUsd or lower maxDurationMs.`,
    { details: { estimateUsd: total, maxUsd, hourlyUsd } },
  );
}

/**
 * PRICE_UNKNOWN for a provider that has no `estimate()` and whose plan states no price: what
 * `.train()` throws when a money budget needs the price, and `.plan()` reports.
 *
 * @example
 * ```ts
 * throw statedPriceUnknownError("my-cloud");
 * ```
 */
export function statedPriceUnknownError(provider: string): RunctlError {
  return new RunctlError("PRICE_UNKNOWN", `Provider ${provider} states no price per hour; a money budget needs one.`, { details: { provider } });
}
