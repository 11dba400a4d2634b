import { RunctlError } from "../errors/runctl-error.js";
import type { Provider } from "../providers/types.js";
import type { CancelStrategy } from "../run/training-run.js";
import type { Storage, StorageDescriptor } from "../storage/types.js";

/**
 * A hyperparameter value: anything JSON can carry losslessly.
 *
 * @example
 * ```ts
 * const hp: Record<string, HyperparamValue> = { lr: 1e-3, layers: [64, 64], opt: { name: "adam" } };
 * ```
 */
export type HyperparamValue = string | number | boolean | null | readonly HyperparamValue[] | { readonly [key: string]: HyperparamValue };

/** What makes a run restart on a new machine. */
export type RecoverTrigger = "interruption" | "host-lost";

/**
 * A storage the run uses, as the spec names it: its URI, how the machine reaches it (resolved and
 * checked by the plan), and the key of the live object in {@link RunResources.storages}.
 */
export interface StorageRef {
  /** Key into {@link RunResources.storages}. */
  readonly key: string;
  /** The storage's URI, for the journal and messages. */
  readonly uri: string;
  /** How the agent on the machine reaches it (written into `spec.json`). */
  readonly descriptor: StorageDescriptor;
}

/**
 * One run, as the plan validated it: plain, JSON-serializable data with every default applied.
 * Live objects (the provider, storage clients, the abort signal) are not in it: they are in
 * {@link RunResources}, and the spec names storages by {@link StorageRef.key}
 * (docs/decisions/0010-run-spec-and-resources.md). The engine reads nothing else from the plan.
 */
export interface RunSpec {
  readonly version: 1;
  /** The provider's name (as recorded in the journal). */
  readonly provider: string;
  /** The run id given to `.train()`, or null to generate one when the run starts. */
  readonly runId: string | null;
  /** The trainer script, relative to the workdir. */
  readonly script: string;
  /** Hyperparameters (passed as `RUNCTL_HPARAMS`). */
  readonly hyperparams: Readonly<Record<string, HyperparamValue>>;
  /** The trainer's arguments after the script: `--name value` per hyperparameter, then `.train()`'s `args`. */
  readonly trainerArgs: readonly string[];
  /** Python interpreter for the trainer, or null for the machine's. */
  readonly python: string | null;
  /** Environment for setup commands and the trainer. */
  readonly env: Readonly<Record<string, string>>;
  /** Time the trainer gets after SIGTERM before SIGKILL. */
  readonly graceMs: number;
  /** How often a `cost` event is emitted (and the money budget checked). */
  readonly costIntervalMs: number;
  /** Delete the run folder on the machine once the run has ended. */
  readonly cleanup: boolean;
  /** What aborting the run's signal does. */
  readonly cancelStrategy: CancelStrategy;
  /** The `metricPattern` regular expression, as source and flags; null when none. */
  readonly metricPattern: { readonly source: string; readonly flags: string } | null;
  /** The local folder synced to the machine (absolute) and how; null when nothing is synced. */
  readonly sync: { readonly dir: string; readonly ignore: readonly string[]; readonly maxBytes: number | null; readonly maxFiles: number | null } | null;
  /** Setup on the machine, defaults applied; null when `.setup()` was not called. */
  readonly setup: {
    readonly requirements: string | null;
    readonly pip: { readonly findLinks: readonly string[]; readonly noIndex: boolean; readonly indexUrl: string | null; readonly extraArgs: readonly string[] };
    readonly systemSitePackages: boolean;
    readonly commands: readonly string[];
  } | null;
  /** `.data()` inputs, in call order. */
  readonly data: readonly RunSpecData[];
  /** Where `.outputs()` go; null when not set. */
  readonly outputs: StorageRef | null;
  /** Checkpoints: the storage (null: none configured; the engine may commit on the machine), the trainer's folder, retention. */
  readonly checkpoints: { readonly storage: StorageRef | null; readonly dir: string | null; readonly keep: number | null; readonly settleMs: number };
  /** Limits. */
  readonly budget: { readonly maxDurationMs: number | null; readonly maxUsd: number | null };
  /** Recovery on a new machine, defaults applied; null when `.recover()` was not called. */
  readonly recover: {
    readonly maxRestarts: number;
    readonly onEvents: readonly RecoverTrigger[];
    readonly backoffMs: number;
    readonly hostLostAfterMs: number;
    readonly retryOnExitCodes: readonly number[];
  } | null;
  /** The checkpoint to restore before training (`.resumeFrom()`); null when none. */
  readonly resume: { readonly storage: StorageDescriptor; readonly runId: string; readonly name: string | null } | null;
  /** Multi-node training (`.nodes()`), defaults applied; null: one machine. */
  readonly nodes: RunSpecNodes | null;
  /** The image setup steps and the trainer run in (`.container()`), defaults applied; null: on the machine itself. */
  readonly container: RunSpecContainer | null;
}

/** `.nodes()` as the plan validated it (docs/multi-node.md). */
export interface RunSpecNodes {
  /** Machines in the gang. */
  readonly count: number;
  /** Processes per node (`--nproc_per_node`). */
  readonly procsPerNode: number;
  /** Rendezvous port on rank 0. */
  readonly masterPort: number;
  /** How each node starts the trainer. */
  readonly launcher: "torchrun" | "none";
  /** The rank whose checkpoint folder is committed. */
  readonly checkpointsFromNode: number;
}

/** `.container()` as the plan validated it (docs/containers.md). */
export interface RunSpecContainer {
  readonly image: string;
  readonly runtime: "docker" | "podman";
  readonly pull: "missing" | "always" | "never";
  readonly gpus: "auto" | "all" | "none" | number;
  readonly network: string;
  readonly shmSize: string | null;
  readonly user: string | null;
  /** The daemon address (`DOCKER_HOST`), or null for the CLI's default. */
  readonly host: string | null;
  readonly env: Readonly<Record<string, string>>;
  /** Machine folders mounted into the container (absolute, normalized). */
  readonly mounts: readonly { readonly source: string; readonly target: string; readonly readOnly: boolean }[];
}

/** One `.data()` input of a {@link RunSpec}: a path on the machine, or a storage the machine downloads from. */
export type RunSpecData =
  | { readonly kind: "path"; readonly uri: string; readonly path: string; readonly to: string }
  | { readonly kind: "storage"; readonly uri: string; readonly storage: StorageRef; readonly to: string };

/** The live objects a {@link RunSpec} needs, kept apart from it. */
export interface RunResources {
  /** Where the run's machines come from. */
  readonly provider: Provider;
  /** Storage clients, by {@link StorageRef.key}. */
  readonly storages: ReadonlyMap<string, Storage>;
  /** Aborting cancels the run with {@link RunSpec.cancelStrategy}. */
  readonly signal?: AbortSignal | undefined;
}

/**
 * The live storage a ref names; INVALID_ARGUMENT when the resources lack it (a spec built by hand
 * with resources that do not match).
 *
 * @example
 * ```ts
 * const checkpoints = spec.checkpoints.storage && storageOf(resources, spec.checkpoints.storage);
 * ```
 */
export function storageOf(resources: RunResources, ref: StorageRef): Storage {
  const storage = resources.storages.get(ref.key);
  if (!storage) throw new RunctlError("INVALID_ARGUMENT", `The run spec names storage ${ref.key} (${ref.uri}), which its resources do not hold.`);
  return storage;
}
