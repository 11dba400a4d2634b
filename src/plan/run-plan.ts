import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { RunctlError } from "../errors/runctl-error.js";
import type { Provider } from "../providers/types.js";
import { startRun } from "../engine/start-run.js";
import { doctor, type DoctorOptions, type DoctorReport } from "../engine/doctor/doctor.js";
import type { TrainingRun } from "../run/training-run.js";
import { buildRunSpec } from "./build-run-spec.js";
import { parseContainer, type ContainerOptions } from "./container-options.js";
import { parseNodes, type NodesOptions } from "./nodes-options.js";
import { hyperparamArgs, validateHyperparams, type HyperparamValue } from "./hyperparams.js";
import { summarizePlan, type PlanSummary } from "./plan-summary.js";
import { provisionMachine, type ProvisionedMachine } from "./provisioned-machine.js";
import { checkExecString, checkExecTotal } from "./os-limits.js";
import type { BudgetOptions, CheckpointOptions, DataOptions, PlanState, RecoverOptions, ResumeSource, SetupOptions, SyncOptions, TrainOptions } from "./plan-types.js";
import { isStorageUri, storageFromUri } from "../storage/resolve-storage.js";
import type { Storage } from "../storage/types.js";
import { refuseStoredSecrets } from "../transport/secrets-channel.js";
import {
  budgetOptionsSchema,
  checkpointOptionsSchema,
  existingDir,
  parseDataUri,
  parseOptions,
  recoverOptionsSchema,
  setupOptionsSchema,
  syncOptionsSchema,
  trainOptionsSchema,
  validateEnv,
  validateRelativePath,
} from "./validate.js";

/**
 * An immutable run plan. Every call returns a new plan, so a base plan can be shared and branched
 * (one base, many `.train()` calls for a sweep). Bad input throws a typed {@link RunctlError} at the
 * call that received it, before anything is created.
 *
 * @example
 * ```ts
 * const base = Runctl.instance(local()).sync("./project").setup({ requirements: "requirements.txt" });
 * const a = base.train("train.py", { hyperparams: { lr: 1e-3 } });
 * const b = base.train("train.py", { hyperparams: { lr: 1e-2 } });
 * ```
 */
export class RunPlan {
  /** @internal */
  readonly state: PlanState;

  /** @internal Use `Runctl.instance(provider)`. */
  constructor(state: PlanState) {
    this.state = Object.freeze(state);
  }

  /** @internal */
  static of(provider: Provider): RunPlan {
    if (typeof provider !== "object" || provider === null || typeof provider.provision !== "function") {
      throw new RunctlError("INVALID_ARGUMENT", "Runctl.instance(provider): provider must be a Provider such as local(), sshHosts(...) or ec2(...).");
    }
    return new RunPlan({ provider, data: [], env: {} });
  }

  private with(patch: Partial<PlanState>): RunPlan {
    return new RunPlan({ ...this.state, ...patch });
  }

  /**
   * Syncs a local folder to the machine before the run (content manifest: only changed files travel).
   * Honours default excludes, `.gitignore` at every level, `.runctlignore` and `options.ignore`.
   *
   * @example
   * ```ts
   * plan.sync("./", { ignore: ["data/", "*.ckpt"] })
   * ```
   */
  sync(dir: string, options: SyncOptions = {}): RunPlan {
    const parsed = parseOptions(syncOptionsSchema, options, ".sync()") as SyncOptions;
    return this.with({ sync: { dir: existingDir(dir), options: parsed } });
  }

  /**
   * Installs dependencies on the machine: `requirements` into a venv cached by content hash, then
   * `commands`. A failed install fails the run with pip's output; training never starts.
   *
   * @example
   * ```ts
   * plan.setup({ requirements: "requirements.txt", pip: { noIndex: true, findLinks: ["/opt/wheels"] } })
   * ```
   */
  setup(options: SetupOptions): RunPlan {
    const parsed = parseOptions(setupOptionsSchema, options, ".setup()") as SetupOptions;
    if (parsed.requirements !== undefined) validateRelativePath(parsed.requirements, ".setup() requirements");
    return this.with({ setup: parsed });
  }

  /**
   * Fetches input data on the machine before training, into `options.to` (relative to the workdir):
   * a folder or file on the machine, or every object under an S3 prefix (`"s3://bucket/prefix"`, or
   * `s3(...)` for an endpoint or credentials of your own), downloaded by the machine itself, verified
   * by size and checksum, and resumable.
   *
   * @example
   * ```ts
   * plan.data("/datasets/mnist", { to: "data" })
   * plan.data("s3://my-bucket/mnist/", { to: "data" })
   * ```
   */
  data(source: string | Storage, options: DataOptions = {}): RunPlan {
    const to = validateRelativePath(options.to ?? "data", ".data() to");
    const storage = typeof source === "string" ? (isStorageUri(source) ? storageFromUri(source) : undefined) : source;
    if (storage) {
      reachableFrom(this.state.provider, storage, ".data()");
      return this.with({ data: [...this.state.data, { kind: "storage", uri: storage.uri, storage, to }] });
    }
    if (typeof source !== "string") throw new RunctlError("INVALID_ARGUMENT", ".data(source): give a path, an s3:// URI or a Storage.");
    const path = parseDataUri(source, this.state.provider.sharesLocalFilesystem);
    return this.with({ data: [...this.state.data, { kind: "path", uri: source, path, to }] });
  }

  /**
   * Uploads the run's output folder (`RUNCTL_OUTPUT_DIR`) when the trainer has exited, whatever its
   * status, to `<target>/<runId>/outputs/`. Done by the machine itself.
   *
   * @example
   * ```ts
   * plan.outputs("s3://my-bucket/outputs")
   * ```
   */
  outputs(target: string | Storage): RunPlan {
    const storage = typeof target === "string" ? storageFromUri(target) : target;
    reachableFrom(this.state.provider, storage, ".outputs()");
    return this.with({ outputs: storage });
  }

  /**
   * Runs setup and the trainer inside a container image on the machine (docker or podman there);
   * the agent stays on the machine, supervising. The run's code, checkpoint, data and output folders
   * are mounted at `/runctl/code`, `/runctl/checkpoints`, `/runctl/data` and `/runctl/outputs`
   * (the `RUNCTL_*` variables point there), the network is the machine's (`"host"`), and signals reach
   * the trainer (`docker run --init`). Everything else works as without a container: checkpoints,
   * resume, logs, metrics, cancel, budgets, spot recovery. See docs/containers.md.
   *
   * @example
   * ```ts
   * plan.container("pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime", { gpus: "all", shmSize: "8g", mounts: [{ source: volume, target: "/data" }] })
   * ```
   */
  container(image: string, options: ContainerOptions = {}): RunPlan {
    return this.with({ container: parseContainer(image, options) });
  }

  /**
   * Trains on `count` machines as one gang with PyTorch's launcher: each node runs
   * `torchrun --nnodes count --node_rank r --master_addr <rank 0> …` (a bare DDP script works
   * unchanged), log lines carry their node, checkpoints are committed from node 0, and a failure of
   * any node stops the whole gang (restarted as a whole with `.recover()`). See docs/multi-node.md.
   *
   * @example
   * ```ts
   * plan.nodes(2, { procsPerNode: 8 })
   * ```
   */
  nodes(count: number, options: NodesOptions = {}): RunPlan {
    return this.with({ nodes: parseNodes(count, options, this.state.provider) });
  }

  /**
   * Adds environment variables for setup commands and the trainer. Merged over earlier calls.
   *
   * @example
   * ```ts
   * plan.env({ WANDB_MODE: "offline" })
   * ```
   */
  env(vars: Readonly<Record<string, string>>): RunPlan {
    return this.with({ env: { ...this.state.env, ...validateEnv(vars) } });
  }

  /**
   * Where finished checkpoints are committed (manifest with sha256 written last), and how many to keep.
   *
   * @example
   * ```ts
   * plan.checkpoints({ storage: localDir("./ckpt"), keep: 3 })
   * ```
   */
  checkpoints(options: CheckpointOptions): RunPlan {
    const parsed = parseOptions(checkpointOptionsSchema, options, ".checkpoints()") as CheckpointOptions;
    if (parsed.storage) reachableFrom(this.state.provider, parsed.storage, ".checkpoints()");
    if (parsed.dir !== undefined) {
      // Relative to the workdir and inside it, like .data({ to }): an absolute path or `..` would
      // have the agent commit (and, on resume, restore into) a folder outside the run.
      const dir = validateRelativePath(parsed.dir, ".checkpoints() dir");
      if (dir === ".") throw new RunctlError("INVALID_ARGUMENT", '.checkpoints() dir must be a folder inside the workdir, not the workdir itself ("."); e.g. "checkpoints".');
      return this.with({ checkpoints: { ...parsed, dir } });
    }
    return this.with({ checkpoints: parsed });
  }

  /**
   * Survives losing the machine: on a spot interruption (handled on the machine: SIGTERM, final
   * checkpoint committed) or a machine that stays unreachable, the run is restarted on a new machine
   * from the same provider (the next free host of a pool, a new instance on EC2), resuming from its
   * latest verified checkpoint under the same run id. A dropped connection alone never restarts a
   * healthy run. Needs checkpoint storage that outlives the machine.
   *
   * @example
   * ```ts
   * plan.checkpoints({ storage: s3("s3://bucket/ckpt") }).recover({ maxRestarts: 3 })
   * ```
   */
  recover(options: RecoverOptions = {}): RunPlan {
    return this.with({ recover: parseOptions(recoverOptionsSchema, options, ".recover()") as RecoverOptions });
  }

  /**
   * Limits the run. Both limits are enforced on the machine by the agent, so they hold when the
   * client is gone; `maxUsd` is also watched by the client, and a run whose estimate exceeds it is
   * refused before anything is created (BUDGET_EXCEEDED).
   *
   * @example
   * ```ts
   * plan.budget({ maxUsd: 20, maxDurationMs: 6 * 3600_000 })
   * ```
   */
  budget(options: BudgetOptions): RunPlan {
    return this.with({ budget: parseOptions(budgetOptionsSchema, options, ".budget()") as BudgetOptions });
  }

  /**
   * Starts from a checkpoint of another run: restored (sha256-verified) into the checkpoint folder
   * before training, with `RUNCTL_RESUME_FROM` set. Without a name, the latest that verifies.
   *
   * @example
   * ```ts
   * plan.resumeFrom(previousRunId)
   * plan.resumeFrom(await oldRun.checkpoints().latest())
   * ```
   */
  resumeFrom(source: ResumeSource): RunPlan {
    if (source === undefined || source === null || (typeof source !== "string" && typeof source !== "object")) {
      throw new RunctlError("INVALID_ARGUMENT", ".resumeFrom(): give a checkpoint, a run id, or { runId, storage?, name? }.");
    }
    return this.with({ resumeFrom: source });
  }

  /**
   * Starts the run, once, eagerly, and returns its handle: await it for the {@link RunResult},
   * iterate it for {@link RunEvent}s. Throws synchronously on invalid input (unknown script,
   * bad hyperparameters) before anything is created.
   *
   * @example
   * ```ts
   * const run = plan.train("train.py", { hyperparams: { lr: 1e-3, epochs: 10 } });
   * for await (const e of run) if (e.type === "log") console.log(e.line);
   * const result = await run;
   * ```
   */
  train(script: string, options: TrainOptions = {}): TrainingRun {
    const parsed = parseOptions(trainOptionsSchema, options, ".train()") as TrainOptions;
    const hyperparams = validateHyperparams(parsed.hyperparams ?? {});
    this.checkScript(script);
    this.checkCommand(".train()", script, hyperparams, parsed.args ?? []);
    this.checkRecovery();
    const { spec, resources } = buildRunSpec(this.state, script, { ...parsed, hyperparams });
    return startRun(spec, resources);
  }

  /**
   * The dry run: every step, the resources that would be created (with tags), the sync summary and
   * a cost estimate. No side effects.
   *
   * @example
   * ```ts
   * const summary = await plan.plan("train.py");
   * console.log(summary.steps.join("\n"));
   * ```
   */
  plan(script?: string, options: TrainOptions = {}): Promise<PlanSummary> {
    if (script !== undefined) {
      const parsed = parseOptions(trainOptionsSchema, options, ".plan()") as TrainOptions;
      const hyperparams = validateHyperparams(parsed.hyperparams ?? {});
      this.checkScript(script);
      this.checkCommand(".plan()", script, hyperparams, parsed.args ?? []);
    }
    return summarizePlan(this.state, script, options);
  }

  /**
   * Checks this plan's target before a first run (`runctl doctor FILE`): its provider's machines
   * (reachable, Python, torch, disk, GPU; EC2: credentials and IAM actions by DryRun) and the
   * storages of `.checkpoints()`, `.data()` and `.outputs()`. Creates nothing; see {@link doctor}.
   *
   * @example
   * ```ts
   * const report = await Runctl.instance(local()).doctor();
   * console.log(report.ok ? "ready" : report.checks.filter((c) => c.status === "fail"));
   * ```
   */
  doctor(options: DoctorOptions = {}): Promise<DoctorReport> {
    const storages = [this.state.checkpoints?.storage, ...this.state.data.map((d) => (d.kind === "storage" ? d.storage : undefined)), this.state.outputs];
    const unique = [...new Map(storages.filter((s): s is Storage => s !== undefined).map((s) => [s.uri, s])).values()];
    return doctor({ provider: this.state.provider, storages: unique }, options);
  }

  /**
   * Provisions the machine and hands it to you to drive step by step (exec, sync, files, release).
   *
   * @example
   * ```ts
   * await using machine = await Runctl.instance(local()).provision();
   * await machine.exec(["nvidia-smi"]);
   * ```
   */
  provision(options: { readonly signal?: AbortSignal | undefined } = {}): Promise<ProvisionedMachine> {
    return provisionMachine(this.state.provider, options);
  }

  /** Recovery resumes from checkpoints, so they must live somewhere the next machine can read. */
  private checkRecovery(): void {
    if (this.state.checkpoints && !this.state.checkpoints.storage && !this.state.provider.sharesLocalFilesystem && !this.state.provider.transportFor) {
      throw new RunctlError(
        "INVALID_ARGUMENT",
        `.checkpoints(): ${this.state.provider.name} machines are gone after the run, and the checkpoints with them; add .checkpoints({ storage: s3(...) }).`,
      );
    }
    // A batch provider's checkpoints default to its shared filesystem, which every attempt's nodes see.
    if (this.state.recover && !this.state.checkpoints?.storage && !this.state.provider.sharesLocalFilesystem && !this.state.provider.batch) {
      throw new RunctlError(
        "INVALID_ARGUMENT",
        ".recover(): a run that restarts on a new machine needs checkpoint storage that outlives the machine; add .checkpoints({ storage: s3(...) }). Without it every restart would begin from step 0.",
      );
    }
  }

  /**
   * The trainer's command line and environment must reach `execve` exactly as written: every
   * string free of NUL and lone surrogates and within the operating system's size limits.
   */
  private checkCommand(call: string, script: string, hyperparams: Readonly<Record<string, HyperparamValue>>, args: readonly string[]): void {
    checkExecString(`${call} script`, script, "INVALID_ARGUMENT");
    args.forEach((arg, i) => checkExecString(`${call} args[${i}]`, arg, "INVALID_ARGUMENT"));
    const argv = [script, ...hyperparamArgs(hyperparams), ...args];
    checkExecTotal(call, argv, { ...this.state.env, RUNCTL_HPARAMS: JSON.stringify(hyperparams) });
  }

  private checkScript(script: string): void {
    if (typeof script !== "string" || script.length === 0) {
      throw new RunctlError("SCRIPT_NOT_FOUND", ".train(script): script must be a path to a Python file.");
    }
    if (this.state.sync) {
      const rel = validateRelativePath(script, ".train() script");
      const full = join(this.state.sync.dir, rel);
      if (!existsSync(full) || !statSync(full).isFile()) {
        throw new RunctlError("SCRIPT_NOT_FOUND", `.train(${JSON.stringify(script)}): ${full} does not exist; the script must be inside the synced folder ${this.state.sync.dir}.`);
      }
    } else if (this.state.provider.sharesLocalFilesystem) {
      if (!existsSync(script) || !statSync(script).isFile()) {
        throw new RunctlError("SCRIPT_NOT_FOUND", `.train(${JSON.stringify(script)}): no such file (relative paths are relative to ${process.cwd()}).`);
      }
    }
  }
}

/** Machines of `provider` must be able to reach `storage` themselves (the agent writes and reads it). */
function reachableFrom(provider: Provider, storage: Storage, call: string): void {
  if (typeof storage !== "object" || storage === null || typeof storage.put !== "function") {
    throw new RunctlError("INVALID_ARGUMENT", `${call}: expected a Storage such as localDir(...) or s3(...).`);
  }
  if (storage.machineDescriptor?.({ sharesLocalFilesystem: provider.sharesLocalFilesystem }) === undefined) {
    throw new RunctlError("STORAGE_UNREACHABLE", `${call}: machines of the ${provider.name} provider cannot reach ${storage.uri}; use a storage they can reach (s3(...)).`);
  }
  refuseStoredSecrets(storage, provider.stdinLeavesCopy === true, call);
}
