import type { Provider } from "../providers/types.js";
import type { Storage } from "../storage/types.js";
import type { HyperparamValue, RecoverTrigger, RunSpecContainer, RunSpecNodes } from "../engine/run-spec.js";
import type { Checkpoint } from "../checkpoints/checkpoint-store.js";
import type { CancelStrategy } from "../run/training-run.js";

/** Options of `.sync(dir, options)`. */
export interface SyncOptions {
  /** Extra ignore patterns (gitignore syntax, relative to `dir`), applied after `.gitignore` and `.runctlignore`. @defaultValue `[]` */
  readonly ignore?: readonly string[] | undefined;
  /** Refuse to sync a tree larger than this, naming its largest entries. @defaultValue 1 GiB */
  readonly maxBytes?: number | undefined;
  /** Refuse to sync more files than this. @defaultValue 50000 */
  readonly maxFiles?: number | undefined;
}

/** pip options that pass through to `pip install`, so installs work offline or from a mirror. */
export interface PipOptions {
  /** `--find-links` folders or URLs (folders are paths on the machine). @defaultValue `[]` */
  readonly findLinks?: readonly string[] | undefined;
  /** `--no-index`: install only from `findLinks`. @defaultValue false */
  readonly noIndex?: boolean | undefined;
  /** `--index-url`. @defaultValue pip's default */
  readonly indexUrl?: string | undefined;
  /** Any other pip arguments, appended verbatim. @defaultValue `[]` */
  readonly extraArgs?: readonly string[] | undefined;
}

/** Options of `.setup(options)`. */
export interface SetupOptions {
  /** A requirements file relative to the synced folder, installed into a venv keyed by its content hash and reused while unchanged. */
  readonly requirements?: string | undefined;
  /** Shell commands run in the workdir after the install (they are shell on purpose; runctl does not quote them). @defaultValue `[]` */
  readonly commands?: readonly string[] | undefined;
  /** Options passed to pip. */
  readonly pip?: PipOptions | undefined;
  /** Let the venv see the machine's system packages (torch on a Deep Learning AMI). @defaultValue true */
  readonly systemSitePackages?: boolean | undefined;
}

/** Options of `.data(uri, options)`. */
export interface DataOptions {
  /** Where the data lands, relative to the workdir. The first `.data()` call's folder is `RUNCTL_DATA_DIR`. @defaultValue `"data"` */
  readonly to?: string | undefined;
}

/** Options of `.checkpoints(options)`. */
export interface CheckpointOptions {
  /** Where committed checkpoints go. @defaultValue `localDir("$RUNCTL_HOME/checkpoints")` for `local()` */
  readonly storage?: Storage | undefined;
  /** Keep only the newest `keep` committed checkpoints. @defaultValue all */
  readonly keep?: number | undefined;
  /** The trainer's checkpoint folder (`RUNCTL_CHECKPOINT_DIR`), relative to the workdir or absolute on the machine. @defaultValue the run folder's `checkpoints/` */
  readonly dir?: string | undefined;
  /** A checkpoint without a `.done` marker counts as finished once unchanged for this long. @defaultValue 2000 */
  readonly settleMs?: number | undefined;
}

export type { RecoverTrigger } from "../engine/run-spec.js";

/** Options of `.recover(options)`. */
export interface RecoverOptions {
  /** Restarts allowed before the run ends as `interrupted`. @defaultValue 3 */
  readonly maxRestarts?: number | undefined;
  /**
   * What triggers a restart: a spot interruption notice handled on the machine, and/or a machine
   * that stays unreachable for `hostLostAfterMs`. @defaultValue `["interruption", "host-lost"]`
   */
  readonly onEvents?: readonly RecoverTrigger[] | undefined;
  /** Wait before provisioning the next machine. @defaultValue 1000 */
  readonly backoffMs?: number | undefined;
  /** A connection that fails for this long, with the machine unreachable, means the machine is lost. Shorter outages are waited out. @defaultValue 60000 */
  readonly hostLostAfterMs?: number | undefined;
  /** Trainer exit codes that also restart the run (a failed job is otherwise never retried). @defaultValue `[]` */
  readonly retryOnExitCodes?: readonly number[] | undefined;
}

/** Options of `.budget(options)`. */
export interface BudgetOptions {
  /** Stop the run (SIGTERM, grace, then SIGKILL) once it has run this long; enforced on the machine. @defaultValue no limit */
  readonly maxDurationMs?: number | undefined;
  /**
   * Most the run may cost, in US dollars, across every machine it uses. Refused before anything is
   * created when the estimate (price × `maxDurationMs`) exceeds it; enforced by the client and by the
   * agent on the machine (which stops the trainer and, on EC2, shuts the instance down).
   * @defaultValue no limit
   */
  readonly maxUsd?: number | undefined;
}

/** What `.resumeFrom()` accepts: a checkpoint, a run id, or a run id with its storage and a checkpoint name. */
export type ResumeSource =
  | Checkpoint
  | string
  | {
      /** The run whose checkpoint to restore. */
      readonly runId: string;
      /** The storage holding that run's checkpoints. @defaultValue this plan's checkpoint storage */
      readonly storage?: Storage | undefined;
      /** The checkpoint to restore. @defaultValue the newest one that verifies */
      readonly name?: string | undefined;
    };

export type { CancelStrategy } from "../run/training-run.js";

/** Options of `.train(script, options)`. */
export interface TrainOptions {
  /** Hyperparameters: passed as `--name value` arguments and as `RUNCTL_HPARAMS` (JSON). @defaultValue `{}` */
  readonly hyperparams?: Readonly<Record<string, HyperparamValue>> | undefined;
  /** Extra arguments after the hyperparameters, passed verbatim. @defaultValue `[]` */
  readonly args?: readonly string[] | undefined;
  /** Python interpreter for the trainer (and for creating the venv). @defaultValue the machine's `python3` */
  readonly python?: string | undefined;
  /** Aborting cancels the run with `cancelStrategy`. */
  readonly signal?: AbortSignal | undefined;
  /** What aborting `signal` does. @defaultValue `"interrupt"` */
  readonly cancelStrategy?: CancelStrategy | undefined;
  /** A pattern with named groups that turns a log line into a metric event, besides `RUNCTL_METRIC {...}` lines. */
  readonly metricPattern?: RegExp | undefined;
  /** Time the trainer gets after SIGTERM (cancel, max duration) before SIGKILL. @defaultValue 30000 */
  readonly graceMs?: number | undefined;
  /** How often a `cost` event reports the accrued cost (and `.budget({ maxUsd })` is checked) on priced machines. @defaultValue 60000 */
  readonly costIntervalMs?: number | undefined;
  /**
   * Delete the run's folder on the machine once it has ended (synced code copy, log, local
   * checkpoint folder). Committed checkpoints, the synced mirror and cached venvs stay.
   * @defaultValue false
   */
  readonly cleanup?: boolean | undefined;
  /** Use this run id instead of a generated one (letters, digits, `-`, `_`). */
  readonly runId?: string | undefined;
}

/** One `.data()` input: a path on the machine, or a storage (an S3 prefix) the machine downloads from. */
export type DataSource =
  | { readonly kind: "path"; readonly uri: string; readonly path: string; readonly to: string }
  | { readonly kind: "storage"; readonly uri: string; readonly storage: Storage; readonly to: string };

/** The fluent plan's data: plain, immutable, validated on every call. */
export interface PlanState {
  readonly provider: Provider;
  readonly sync?: { readonly dir: string; readonly options: SyncOptions } | undefined;
  readonly setup?: SetupOptions | undefined;
  readonly data: readonly DataSource[];
  readonly outputs?: Storage | undefined;
  readonly env: Readonly<Record<string, string>>;
  readonly checkpoints?: CheckpointOptions | undefined;
  readonly budget?: BudgetOptions | undefined;
  readonly recover?: RecoverOptions | undefined;
  readonly resumeFrom?: ResumeSource | undefined;
  readonly container?: RunSpecContainer | undefined;
  readonly nodes?: RunSpecNodes | undefined;
}
