/**
 * The result of one `runctl doctor` check. Data only: providers, storages and the engine's machine
 * checks all produce it, so it lives in a leaf folder every layer can reach.
 */

/**
 * How a check came out: `ok` (ready), `warn` (works, but worth a look: no GPU on a CPU target,
 * little disk), `fail` (a run would fail: fix it first), `skip` (could not or need not be checked).
 *
 * @example
 * ```ts
 * const worst: DoctorStatus = report.ok ? "ok" : "fail";
 * ```
 */
export type DoctorStatus = "ok" | "warn" | "fail" | "skip";

/**
 * One check of `runctl doctor` (the `doctor()` function): what was looked at, how it came out, and
 * what to do about it.
 *
 * @example
 * ```ts
 * const check: DoctorCheck = { id: "python", title: "python3 >= 3.8", status: "ok", detail: "Python 3.12.3" };
 * ```
 */
export interface DoctorCheck {
  /** Stable id of the check (`transport`, `python`, `torch`, `disk`, `gpu`, `s3-tools`, `storage`, `aws-credentials`, `iam:ec2:RunInstances`). */
  readonly id: string;
  /** What was checked, for people (names the machine or storage). */
  readonly title: string;
  readonly status: DoctorStatus;
  /** What was found (a version, free bytes, an error message with its code). */
  readonly detail: string;
  /** What to do, when something should be done: a command to run, a setting to change. */
  readonly fix?: string | undefined;
  /** The RunctlError code (or AWS error code) behind a failed check, for scripts. */
  readonly code?: string | undefined;
}
