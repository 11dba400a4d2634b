import type { EC2Client } from "@aws-sdk/client-ec2";
import { onDemandPrice, PRICE_CATALOG, priceUnknownError } from "../../cost/price-catalog.js";
import type { ProviderEstimate } from "../types.js";
import { currentSpotPrices } from "./spot-price.js";

/** What an EC2 price depends on: the provider's options. */
export interface Ec2PriceOptions {
  readonly region: string;
  readonly instanceType?: string | undefined;
  readonly instanceId?: string | undefined;
  readonly availabilityZones?: readonly string[] | undefined;
  /** `ec2({ hourlyPriceUsd })`: the escape for a price runctl cannot know. */
  readonly hourlyPriceUsd?: number | undefined;
  /** Whether the instance would be spot. */
  readonly spot: boolean;
}

/** The escape named in PRICE_UNKNOWN messages. */
const ESCAPE = "ec2({ hourlyPriceUsd })";

/**
 * The price `.plan()` states without asking the cloud: the given one, else the catalog's; undefined
 * when neither knows (never 0).
 *
 * @example
 * ```ts
 * plannedEc2Price({ region: "us-east-1", instanceType: "g5.xlarge", spot: false }); // 1.006
 * ```
 */
export function plannedEc2Price(options: Ec2PriceOptions): number | undefined {
  if (options.hourlyPriceUsd !== undefined) return options.hourlyPriceUsd;
  return options.instanceType ? onDemandPrice(options.region, options.instanceType) : undefined;
}

/**
 * The price a run would pay now: the given one, else the spot market's (spot), else the catalog's
 * on-demand price. PRICE_UNKNOWN when none is known: `.train()` throws it when a budget needs the
 * price, and `.plan()` reports it.
 *
 * @example
 * ```ts
 * const { hourlyPriceUsd, basis } = await estimateEc2Price(options, ec2Client);
 * ```
 */
export async function estimateEc2Price(options: Ec2PriceOptions, ec2: () => EC2Client, signal?: AbortSignal): Promise<ProviderEstimate> {
  if (options.hourlyPriceUsd !== undefined) return { hourlyPriceUsd: options.hourlyPriceUsd, basis: "given" };
  const type = options.instanceType;
  if (options.spot && type) {
    const prices = await currentSpotPrices(ec2(), type, { ...(options.availabilityZones?.[0] ? { availabilityZone: options.availabilityZones[0] } : {}), signal });
    if (prices[0]) return { hourlyPriceUsd: prices[0].hourlyUsd, basis: `spot market ${prices[0].availabilityZone}` };
  }
  const price = plannedEc2Price(options);
  if (price === undefined) throw priceUnknownError(options.region, type ?? `instance ${options.instanceId ?? "?"}`, ESCAPE);
  return { hourlyPriceUsd: price, basis: `on-demand catalog ${PRICE_CATALOG.asOf}` };
}

/**
 * The price a launched instance is metered at: the given one, the spot market's, the catalog's.
 * With none known it warns and returns 0, which the cost meter treats as unpriced:
 * no `cost` events, and the result's cost stays 0 (a budget would have refused the run before).
 *
 * @example
 * ```ts
 * const hourly = await meteredEc2Price(options, ec2Client, "g5.xlarge", "on-demand", undefined, undefined, warn);
 * ```
 */
export async function meteredEc2Price(
  options: Pick<Ec2PriceOptions, "region" | "hourlyPriceUsd">,
  ec2: () => EC2Client,
  type: string,
  market: "spot" | "on-demand" | "existing",
  availabilityZone: string | undefined,
  signal: AbortSignal | undefined,
  warn: (message: string) => void,
): Promise<number> {
  if (options.hourlyPriceUsd !== undefined) return options.hourlyPriceUsd;
  if (market === "spot") {
    const prices = await currentSpotPrices(ec2(), type, { availabilityZone, signal }).catch(() => []);
    if (prices[0]) return prices[0].hourlyUsd;
  }
  const price = onDemandPrice(options.region, type);
  if (price !== undefined) return price;
  warn(`runctl: ${priceUnknownError(options.region, type || "this instance", ESCAPE).message} Its cost is not metered.`);
  return 0;
}
