/** One machine's time on the meter. */
interface MeterSpan {
  readonly machineId: string;
  readonly hourlyUsd: number;
  readonly startMs: number;
  endMs: number | undefined;
}

/**
 * Accrued cost of a run across its machines: each machine costs its hourly price from the moment
 * it was launched until it was released (a recovered run pays for every machine it used).
 *
 * @example
 * ```ts
 * const meter = new CostMeter();
 * meter.start("i-1", 1.006, launchedAtMs);
 * meter.usd(); // so far
 * ```
 */
export class CostMeter {
  private readonly spans: MeterSpan[] = [];

  /** Starts metering a machine (idempotent per machine id). */
  start(machineId: string, hourlyUsd: number, startMs: number = Date.now()): void {
    if (this.spans.some((s) => s.machineId === machineId && s.endMs === undefined)) return;
    this.spans.push({ machineId, hourlyUsd, startMs, endMs: undefined });
  }

  /** Stops metering a machine (released, terminated). */
  stop(machineId: string, endMs: number = Date.now()): void {
    for (const span of this.spans) if (span.machineId === machineId && span.endMs === undefined) span.endMs = endMs;
  }

  /** Price per hour of the machines on the meter now. */
  hourlyUsd(): number {
    return this.spans.filter((s) => s.endMs === undefined).reduce((sum, s) => sum + s.hourlyUsd, 0);
  }

  /** Cost accrued until `nowMs`, in US dollars. */
  usd(nowMs: number = Date.now()): number {
    return this.spans.reduce((sum, s) => sum + (s.hourlyUsd * Math.max(0, (s.endMs ?? nowMs) - s.startMs)) / 3_600_000, 0);
  }

  /** Whether any machine with a price was metered. */
  get priced(): boolean {
    return this.spans.some((s) => s.hourlyUsd > 0);
  }
}
