import { DescribeSpotPriceHistoryCommand, type EC2Client } from "@aws-sdk/client-ec2";
import { awsCall } from "../../aws/aws-call.js";

/** The current spot price of a type, per zone. */
export interface SpotPrice {
  readonly availabilityZone: string;
  readonly hourlyUsd: number;
  readonly at: Date;
}

/**
 * The newest Linux spot price of `instanceType` in each zone (DescribeSpotPriceHistory with a start
 * time of now returns the price in force now), cheapest first.
 *
 * @example
 * ```ts
 * const [cheapest] = await currentSpotPrices(ec2, "g5.xlarge");
 * ```
 */
export async function currentSpotPrices(ec2: EC2Client, instanceType: string, options: { readonly availabilityZone?: string | undefined; readonly signal?: AbortSignal | undefined } = {}): Promise<SpotPrice[]> {
  const out = await awsCall(
    "DescribeSpotPriceHistory",
    (http) =>
      ec2.send(
        new DescribeSpotPriceHistoryCommand({
          InstanceTypes: [instanceType as never],
          ProductDescriptions: ["Linux/UNIX"],
          StartTime: new Date(),
          AvailabilityZone: options.availabilityZone,
        }),
        http,
      ), { signal: options.signal });
  const newest = new Map<string, SpotPrice>();
  for (const p of out.SpotPriceHistory ?? []) {
    const price = Number(p.SpotPrice);
    if (!p.AvailabilityZone || !Number.isFinite(price)) continue;
    const at = p.Timestamp ?? new Date(0);
    const known = newest.get(p.AvailabilityZone);
    if (!known || known.at < at) newest.set(p.AvailabilityZone, { availabilityZone: p.AvailabilityZone, hourlyUsd: price, at });
  }
  return [...newest.values()].sort((a, b) => a.hourlyUsd - b.hourlyUsd);
}
