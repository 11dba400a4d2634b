import { throwIfAborted } from "../../errors/runctl-error.js";
import type { Machine, Provider } from "../../providers/types.js";
import type { Storage } from "../../storage/types.js";
import type { DoctorCheck } from "../../util/doctor-check.js";
import { machineChecks } from "./machine-checks.js";
import { storageCheck } from "./storage-check.js";

/**
 * What {@link doctor} checks: a provider's machines, and the storages a run would use
 * (`RunPlan.doctor()` fills them in from `.checkpoints()`, `.data()` and `.outputs()`).
 *
 * @example
 * ```ts
 * const target: DoctorTarget = { provider: sshHosts("ml@gpu-1.lan"), storages: [s3("s3://ckpt/runs")] };
 * ```
 */
export interface DoctorTarget {
  readonly provider: Provider;
  /** Storages the run reads or writes: each is listed once from here; an S3 one also checks boto3/aws on the machines. @defaultValue none */
  readonly storages?: readonly Storage[] | undefined;
}

/**
 * Options of {@link doctor}.
 *
 * @example
 * ```ts
 * await doctor(local(), { minFreeBytes: 20 * 2 ** 30 });
 * ```
 */
export interface DoctorOptions {
  /** Stops the checks with ABORTED. */
  readonly signal?: AbortSignal | undefined;
  /** Free bytes in the machine's root folder below which the disk check fails. @defaultValue 2 GiB */
  readonly minFreeBytes?: number | undefined;
  /** Free bytes below which it warns. @defaultValue 10 GiB */
  readonly warnFreeBytes?: number | undefined;
}

/**
 * What {@link doctor} found: every check in order, and whether none failed.
 *
 * @example
 * ```ts
 * const report: DoctorReport = await doctor(local());
 * if (!report.ok) for (const c of report.checks) if (c.status === "fail") console.error(c.title, c.fix);
 * ```
 */
export interface DoctorReport {
  /** True when no check failed (warnings and skips allowed). */
  readonly ok: boolean;
  readonly checks: readonly DoctorCheck[];
}

const GiB = 2 ** 30;

/**
 * Checks a target before its first run and says what to fix: whether its machines can be reached
 * (SSH: connected, host key verified; never trusted automatically), Python ≥ 3.8 and torch on them,
 * free disk in runctl's folder, visible GPUs; for EC2, the credentials and the IAM actions a run
 * needs (by DryRun); for each storage, a small list from here (and boto3 or the aws CLI on the
 * machines for S3). Creates nothing and leases nothing. Failed checks are results, not exceptions;
 * only an abort throws.
 *
 * @param target - A provider, or a provider with the run's storages.
 * @example
 * ```ts
 * const report = await doctor(sshHosts("ml@gpu-1.lan"));
 * for (const c of report.checks) console.log(c.status, c.title, c.detail, c.fix ?? "");
 * ```
 */
export async function doctor(target: Provider | DoctorTarget, options: DoctorOptions = {}): Promise<DoctorReport> {
  const { provider, storages = [] } = "provider" in target ? target : { provider: target, storages: [] };
  const signal = options.signal;
  throwIfAborted(signal);
  const failBelow = options.minFreeBytes ?? 2 * GiB;
  const warnBelow = Math.max(failBelow, options.warnFreeBytes ?? 10 * GiB);
  const checks: DoctorCheck[] = [];
  let machines: readonly Machine[] = [];
  try {
    if (provider.doctor) {
      const found = await provider.doctor(signal ? { signal } : {});
      machines = found.machines;
      checks.push(...found.checks);
    } else {
      checks.push({ id: "provider", title: `${provider.name} provider`, status: "skip", detail: `the ${provider.name} provider has no doctor checks` });
    }
    const perMachine = await Promise.all(
      machines.map((m) => {
        const s3 = storages.some((s) => s.machineDescriptor?.({ sharesLocalFilesystem: m.sharesLocalFilesystem })?.kind === "s3");
        return machineChecks(m, { signal, failBelow, warnBelow, s3 });
      }),
    );
    checks.push(...perMachine.flat());
    for (const storage of storages) checks.push(await storageCheck(storage, signal));
  } finally {
    await Promise.all(machines.map((m) => m.transport.close().catch(() => {})));
  }
  return { ok: !checks.some((c) => c.status === "fail"), checks };
}
