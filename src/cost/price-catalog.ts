import { RunctlError } from "../errors/runctl-error.js";

/**
 * On-demand Linux prices of common EC2 instance types, in US dollars per hour, kept as data with the
 * date they were read. Spot prices are not here: they move, and the EC2 provider asks
 * DescribeSpotPriceHistory for them. Anything missing: pass `hourlyPriceUsd` to the provider.
 *
 * @example
 * ```ts
 * onDemandPrice("us-east-1", "g5.xlarge"); // 1.006
 * ```
 */
export const PRICE_CATALOG = {
  /** When these prices were read from AWS's public price list. */
  asOf: "2026-11-01",
  currency: "USD",
  source: "AWS EC2 On-Demand pricing, Linux, shared tenancy",
  regions: {
    "us-east-1": {
      "t3.micro": 0.0104, "t3.small": 0.0208, "t3.medium": 0.0416, "t3.large": 0.0832, "t3.xlarge": 0.1664, "t3.2xlarge": 0.3328,
      "m5.large": 0.096, "m5.xlarge": 0.192, "m5.2xlarge": 0.384, "m6i.large": 0.096, "m6i.xlarge": 0.192, "m6i.2xlarge": 0.384, "m7i.xlarge": 0.2016,
      "c5.xlarge": 0.17, "c5.2xlarge": 0.34, "c6i.xlarge": 0.17, "c6i.2xlarge": 0.34, "c7i.2xlarge": 0.357,
      "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g4dn.4xlarge": 1.204, "g4dn.12xlarge": 3.912,
      "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.4xlarge": 1.624, "g5.8xlarge": 2.448, "g5.12xlarge": 5.672, "g5.48xlarge": 16.288,
      "g6.xlarge": 0.8048, "g6.2xlarge": 0.9776, "g6e.xlarge": 1.861, "g6e.2xlarge": 2.24208,
      "p3.2xlarge": 3.06, "p3.8xlarge": 12.24, "p4d.24xlarge": 21.96, "p5.48xlarge": 55.04,
    },
    "us-west-2": {
      "t3.micro": 0.0104, "t3.small": 0.0208, "t3.medium": 0.0416, "t3.large": 0.0832, "t3.xlarge": 0.1664,
      "m5.large": 0.096, "m5.xlarge": 0.192, "m6i.large": 0.096, "m6i.xlarge": 0.192, "c5.xlarge": 0.17, "c6i.xlarge": 0.17,
      "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.12xlarge": 5.672,
      "g6.xlarge": 0.8048, "g6e.xlarge": 1.861, "p3.2xlarge": 3.06, "p4d.24xlarge": 21.96, "p5.48xlarge": 55.04,
    },
    "eu-west-1": {
      "t3.micro": 0.0114, "t3.small": 0.0228, "t3.medium": 0.0456, "t3.large": 0.0912, "t3.xlarge": 0.1824,
      "m5.large": 0.107, "m5.xlarge": 0.214, "m6i.large": 0.107, "m6i.xlarge": 0.214, "c5.xlarge": 0.192, "c6i.xlarge": 0.192,
      "g4dn.xlarge": 0.587, "g4dn.2xlarge": 0.838, "g5.xlarge": 1.123, "g5.2xlarge": 1.353, "g5.12xlarge": 6.332,
      "p3.2xlarge": 3.305, "p4d.24xlarge": 24.16,
    },
  } as Readonly<Record<string, Readonly<Record<string, number>>>>,
} as const;

/**
 * The catalog's on-demand price of a type in a region, or undefined when the catalog has none.
 *
 * @example
 * ```ts
 * onDemandPrice("eu-west-1", "g5.xlarge"); // 1.123
 * ```
 */
export function onDemandPrice(region: string, instanceType: string): number | undefined {
  return PRICE_CATALOG.regions[region]?.[instanceType];
}

/**
 * The error for a price nobody knows: neither given (`ec2({ hourlyPriceUsd })`) nor in the catalog
 * nor read from the spot market. `.train()` throws it when a money budget needs the price, and
 * `.plan()` reports the same code and message as its refusal: runctl never counts an unknown price
 * as $0 against a budget.
 *
 * @example
 * ```ts
 * throw priceUnknownError("ap-south-1", "g5.xlarge", "ec2({ hourlyPriceUsd })");
 * ```
 */
export function priceUnknownError(region: string, what: string, escape: string): RunctlError {
  const regions = Object.keys(PRICE_CATALOG.regions).join(", ");
  return new RunctlError(
    "PRICE_UNKNOWN",
    `No price is known for ${what} in ${region}: the built-in on-demand catalog (${PRICE_CATALOG.asOf}) covers common types in ${regions} only. Pass ${escape} to give the price per hour.`,
    { details: { region, what } },
  );
}
