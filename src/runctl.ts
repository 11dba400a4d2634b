import { checkpointStore, type CheckpointStore } from "./checkpoints/checkpoint-store.js";
import { attachRun, type AttachOptions } from "./engine/attach-run.js";
import { RunctlError } from "./errors/runctl-error.js";
import { RunPlan } from "./plan/run-plan.js";
import type { SweepReport } from "./providers/sweep-types.js";
import type { Provider, SweepOptions } from "./providers/types.js";
import type { TrainingRun } from "./run/training-run.js";
import type { Storage } from "./storage/types.js";

/**
 * The entry point: start a plan, reattach to a run, or open a run's checkpoints.
 *
 * @example
 * ```ts
 * import { Runctl, local, localDir } from "runctl";
 *
 * const run = Runctl.instance(local())
 *   .sync("./training")
 *   .checkpoints({ storage: localDir("./checkpoints"), keep: 3 })
 *   .train("train.py", { hyperparams: { lr: 0.1, steps: 60 } });
 * for await (const e of run) if (e.type === "metric") console.log(e.values);
 * console.log((await run).status);
 * ```
 */
export class Runctl {
  private constructor() {}

  /**
   * A new immutable plan on a provider (`local()`, `sshHosts(...)`, `ec2(...)`).
   *
   * @example
   * ```ts
   * const plan = Runctl.instance(local());
   * ```
   */
  static instance(provider: Provider): RunPlan {
    return RunPlan.of(provider);
  }

  /**
   * Reattaches to a run started by this or another process (after a crash, say): replays its
   * journal from `$RUNCTL_HOME/runs/<runId>` and follows it live to the end. Throws RUN_NOT_FOUND
   * for an unknown id.
   *
   * @example
   * ```ts
   * const run = Runctl.attach("20261121-151300-k3f9a2");
   * for await (const e of run) if (e.type === "log") console.log(e.line);
   * ```
   */
  static attach(runId: string, options: AttachOptions = {}): TrainingRun {
    if (typeof runId !== "string" || !/^[A-Za-z0-9][A-Za-z0-9_-]*$/.test(runId)) {
      throw new RunctlError("INVALID_ARGUMENT", `Runctl.attach: ${JSON.stringify(runId)} is not a run id.`);
    }
    return attachRun(runId, options);
  }

  /**
   * The committed checkpoints of any run in a storage, without its handle.
   *
   * @example
   * ```ts
   * const latest = await Runctl.checkpoints(localDir("./checkpoints"), runId).latest();
   * ```
   */
  static checkpoints(storage: Storage, runId: string): CheckpointStore {
    return checkpointStore(storage, runId);
  }

  /**
   * Finds what runctl left behind on a provider (instances, volumes, snapshots, key pairs, security
   * groups, S3 staging folders) whose run is over or whose `runctl:expires-at` has passed, and
   * deletes it. Only resources carrying runctl's full tag set are ever touched, only the provider's
   * owner's (`ec2({ owner })`, else yours) unless `owner` says otherwise (`"all"`), never persistent
   * ones. A live run (an instance of it still running, the run not known to be over) is kept even
   * when expired, unless `force`. `dryRun` reports without deleting anything.
   *
   * @example
   * ```ts
   * const report = await Runctl.sweep({ provider: ec2({ region: "us-east-1", instanceType: "t3.micro" }), dryRun: true });
   * for (const r of report.found) console.log(r.kind, r.id, r.reason);
   * ```
   */
  static async sweep(options: SweepOptions & { readonly provider: Provider }): Promise<SweepReport> {
    const { provider, ...rest } = options;
    if (!provider.sweep) throw new RunctlError("UNSUPPORTED", `The ${provider.name} provider creates nothing that could be left behind; there is nothing to sweep.`);
    return provider.sweep(rest);
  }
}
