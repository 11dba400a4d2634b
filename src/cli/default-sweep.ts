import { RunctlError } from "../index.js";
import type { SweepFn, SweepReport } from "./sweep-report.js";

/**
 * TODO(sweep): the one place `runctl sweep` reaches the SDK. Fill in with
 * `Runctl.sweep({ provider: ec2({ region }), dryRun, owner, signal })` once that API exists; its
 * report is structurally a {@link SweepReport}. Until then it refuses with UNSUPPORTED (exit code 1), so the
 * command never pretends to have swept anything.
 *
 * @defaultValue the sweep `runCli` uses when `io.sweep` is not given
 * @example
 * ```ts
 * const report = await defaultSweep({ region: "us-east-1", dryRun: true, owner: undefined, signal });
 * ```
 */
export const defaultSweep: SweepFn = async () => {
  throw new RunctlError("UNSUPPORTED", "runctl sweep is not available yet in this version of the SDK (Runctl.sweep is missing).");
};
