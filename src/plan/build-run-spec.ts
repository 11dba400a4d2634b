import { RunctlError } from "../errors/runctl-error.js";
import type { RunResources, RunSpec, StorageRef } from "../engine/run-spec.js";
import { defaultCheckpointStorage, descriptorFor } from "../storage/resolve-storage.js";
import type { Storage } from "../storage/types.js";
import { refuseStoredSecrets } from "../transport/secrets-channel.js";
import { hyperparamArgs, type HyperparamValue } from "./hyperparams.js";
import type { PlanState, TrainOptions } from "./plan-types.js";

/**
 * The checkpoint storage of a plan: the one given, else a local folder for machines that share this
 * filesystem, else none (the engine then commits on the machine, or checkpoints stay there).
 */
export function checkpointStorageOf(state: PlanState): Storage | undefined {
  if (state.checkpoints?.storage) return state.checkpoints.storage;
  return state.provider.sharesLocalFilesystem ? defaultCheckpointStorage() : undefined;
}

function resolveResume(state: PlanState, storage: Storage | undefined): RunSpec["resume"] {
  const source = state.resumeFrom;
  if (source === undefined) return null;
  if (typeof source === "string") {
    if (!storage) throw new RunctlError("INVALID_ARGUMENT", ".resumeFrom(runId) needs checkpoint storage; pass { runId, storage }.");
    return { storage: descriptorFor(storage, state.provider), runId: source, name: null };
  }
  const from = source.storage ?? storage;
  if (!from) throw new RunctlError("INVALID_ARGUMENT", ".resumeFrom() needs checkpoint storage; pass { runId, storage }.");
  const name = "manifest" in source ? source.name : (source.name ?? null);
  return { storage: descriptorFor(from, state.provider), runId: source.runId, name };
}

/**
 * Turns a plan and a validated `.train()` call into the engine's plain {@link RunSpec} and the live
 * {@link RunResources} it names. Pure apart from reading `RUNCTL_HOME`; throws (before anything is
 * created) for a storage the machines cannot reach, a storage that would forward credentials over a
 * channel that keeps a copy, or a resume source without storage.
 */
export function buildRunSpec(
  state: PlanState,
  script: string,
  options: TrainOptions & { readonly hyperparams: Readonly<Record<string, HyperparamValue>> },
): { readonly spec: RunSpec; readonly resources: RunResources } {
  const { provider } = state;
  const checkpointStorage = checkpointStorageOf(state);
  if (provider.batch && state.container) {
    // Untested there, and clusters run images through their own runtimes (Apptainer, Pyxis/Enroot).
    throw new RunctlError("UNSUPPORTED", `.container() is not supported on the ${provider.name} provider yet: install the run's dependencies with .setup() (a venv on the shared filesystem).`);
  }
  if (state.nodes && state.nodes.count > 1 && state.container && state.container.network !== "host") {
    throw new RunctlError("INVALID_ARGUMENT", `.nodes(${state.nodes.count}) with .container(): the container's network must be "host" (the nodes reach each other on the machines' addresses), not ${JSON.stringify(state.container.network)}.`);
  }
  if (state.nodes && state.nodes.count > 1 && state.nodes.checkpointsFromNode !== 0 && !checkpointStorage) {
    // Without storage, checkpoints are kept on node 0's machine; another node cannot commit there.
    throw new RunctlError("INVALID_ARGUMENT", `.nodes({ checkpointsFromNode: ${state.nodes.checkpointsFromNode} }) needs .checkpoints({ storage }) (e.g. s3(...)).`);
  }
  const runStorages = [checkpointStorage, ...state.data.map((d) => (d.kind === "storage" ? d.storage : undefined)), state.outputs];
  // A provider that says its machines' stdin leaves a copy: refuse forwarding now, before anything is created.
  for (const s of runStorages) refuseStoredSecrets(s, provider.stdinLeavesCopy === true, ".train()");

  const storages = new Map<string, Storage>();
  const ref = (key: string, storage: Storage): StorageRef => {
    storages.set(key, storage);
    return { key, uri: storage.uri, descriptor: descriptorFor(storage, provider) };
  };
  const checkpointsRef = checkpointStorage ? ref("checkpoints", checkpointStorage) : null;
  const resume = resolveResume(state, checkpointStorage);
  const data = state.data.map((d, i) => (d.kind === "path" ? d : { kind: "storage" as const, uri: d.uri, storage: ref(`data:${i}`, d.storage), to: d.to }));
  const outputs = state.outputs ? ref("outputs", state.outputs) : null;
  const setup = state.setup;
  const recover = state.recover;
  const spec: RunSpec = {
    version: 1,
    provider: provider.name,
    runId: options.runId ?? null,
    script,
    hyperparams: options.hyperparams,
    trainerArgs: [...hyperparamArgs(options.hyperparams), ...(options.args ?? [])],
    python: options.python ?? null,
    env: state.env,
    graceMs: options.graceMs ?? 30_000,
    costIntervalMs: options.costIntervalMs ?? 60_000,
    cleanup: options.cleanup ?? false,
    cancelStrategy: options.cancelStrategy ?? "interrupt",
    metricPattern: options.metricPattern ? { source: options.metricPattern.source, flags: options.metricPattern.flags } : null,
    sync: state.sync
      ? { dir: state.sync.dir, ignore: state.sync.options.ignore ?? [], maxBytes: state.sync.options.maxBytes ?? null, maxFiles: state.sync.options.maxFiles ?? null }
      : null,
    setup: setup
      ? {
          requirements: setup.requirements ?? null,
          pip: {
            findLinks: setup.pip?.findLinks ?? [],
            noIndex: setup.pip?.noIndex ?? false,
            indexUrl: setup.pip?.indexUrl ?? null,
            extraArgs: setup.pip?.extraArgs ?? [],
          },
          systemSitePackages: setup.systemSitePackages ?? true,
          commands: setup.commands ?? [],
        }
      : null,
    data,
    outputs,
    checkpoints: { storage: checkpointsRef, dir: state.checkpoints?.dir ?? null, keep: state.checkpoints?.keep ?? null, settleMs: state.checkpoints?.settleMs ?? 2000 },
    budget: { maxDurationMs: state.budget?.maxDurationMs ?? null, maxUsd: state.budget?.maxUsd ?? null },
    recover: recover
      ? {
          maxRestarts: recover.maxRestarts ?? 3,
          onEvents: recover.onEvents ?? ["interruption", "host-lost"],
          backoffMs: recover.backoffMs ?? 1000,
          hostLostAfterMs: recover.hostLostAfterMs ?? 60_000,
          retryOnExitCodes: recover.retryOnExitCodes ?? [],
        }
      : null,
    resume,
    container: state.container ?? null,
    nodes: state.nodes && state.nodes.count > 1 ? state.nodes : null,
  };
  return { spec, resources: { provider, storages, signal: options.signal } };
}
