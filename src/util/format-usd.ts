/**
 * US dollars for people; `-` when unknown.
 *
 * @example
 * ```ts
 * formatUsd(0.1234); // "$0.1234"
 * ```
 */
export function formatUsd(usd: number | null | undefined): string {
  if (usd === null || usd === undefined || !Number.isFinite(usd)) return "-";
  return usd >= 100 ? `$${usd.toFixed(2)}` : `$${usd.toFixed(4)}`;
}
