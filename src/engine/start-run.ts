import { createHash } from "node:crypto";
import { join, posix } from "node:path";
import { ensureAgent } from "../agent/install-agent.js";
import { checkpointStore } from "../checkpoints/checkpoint-store.js";
import { CommandError, RunctlError, throwIfAborted } from "../errors/runctl-error.js";
import type { HyperparamValue } from "../plan/hyperparams.js";
import type { CancelStrategy, PlanState, TrainOptions } from "../plan/plan-types.js";
import type { Machine, Provider } from "../providers/types.js";
import { machineDir } from "../storage/machine-dir/machine-dir-storage.js";
import { RunJournal } from "../run/journal.js";
import { newRunId } from "../run/run-id.js";
import { TrainingRun } from "../run/training-run.js";
import type { RunResult } from "../run/run-result.js";
import { localDir } from "../storage/local-dir/local-dir-storage.js";
import type { MachineSecrets, Storage, StorageDescriptor } from "../storage/types.js";
import { machineSecretsOver, refuseStoredSecrets } from "../transport/secrets-channel.js";
import { syncTree } from "../sync/sync-tree.js";
import { KeyedMutex } from "../util/keyed-mutex.js";
import { runctlHome, syncHashCachePath } from "../util/runctl-home.js";
import { buildAgentSpec, type AgentSpec } from "./agent-spec.js";
import type { FollowOutcome } from "./follow-run.js";
import { RunSession, type LaunchedRun } from "./run-session.js";
import { setTimeout as sleep } from "node:timers/promises";

/** A validated `.train()` call. */
export interface TrainRequest {
  readonly script: string;
  readonly options: TrainOptions & { readonly hyperparams: Readonly<Record<string, HyperparamValue>> };
}

/**
 * The checkpoint storage of a plan: the one given, else a local folder for machines that share this
 * filesystem, else none (checkpoints then stay on the machine).
 */
export function resolveStorage(state: PlanState): Storage | undefined {
  if (state.checkpoints?.storage) return state.checkpoints.storage;
  return state.provider.sharesLocalFilesystem ? localDir(join(runctlHome(), "checkpoints")) : undefined;
}

/** Checkpoint storage in runctl's folder on the machine, for machines with no storage configured. */
export function machineStorageFor(provider: Provider, machine: Pick<Machine, "record" | "rootDir" | "id">): Storage {
  const connect = provider.transportFor;
  if (!connect) throw new RunctlError("UNSUPPORTED", `The ${provider.name} provider cannot open a transport to ${machine.id}.`);
  return machineDir(() => connect(machine.record), posix.join(machine.rootDir, "checkpoints"), `${provider.name}://${machine.id}`);
}

function descriptorOf(storage: Storage, state: PlanState): StorageDescriptor {
  const descriptor = storage.machineDescriptor?.({ sharesLocalFilesystem: state.provider.sharesLocalFilesystem });
  if (!descriptor) throw new RunctlError("STORAGE_UNREACHABLE", `Machines of the ${state.provider.name} provider cannot reach ${storage.uri}.`);
  return descriptor;
}

function resolveResume(state: PlanState, storage: Storage | undefined): AgentSpec["resume"] {
  const source = state.resumeFrom;
  if (source === undefined) return null;
  if (typeof source === "string") {
    if (!storage) throw new RunctlError("INVALID_ARGUMENT", ".resumeFrom(runId) needs checkpoint storage; pass { runId, storage }.");
    return { storage: descriptorOf(storage, state), runId: source, name: null };
  }
  const from = source.storage ?? storage;
  if (!from) throw new RunctlError("INVALID_ARGUMENT", ".resumeFrom() needs checkpoint storage; pass { runId, storage }.");
  const name = "manifest" in source ? source.name : (source.name ?? null);
  return { storage: descriptorOf(from, state), runId: source.runId, name };
}

/**
 * The first credentials any of the run's storages hands to machines (docs/agent-protocol.md, S3).
 * None over a transport whose stdin leaves a copy (SSM): the machine uses its instance profile,
 * and a storage that insists on forwarding is refused (UNSUPPORTED).
 */
async function machineSecretsFor(storages: readonly (Storage | undefined)[], stdinLeavesCopy: boolean, signal: AbortSignal): Promise<MachineSecrets | undefined> {
  for (const storage of storages) {
    const secrets = await machineSecretsOver(storage, stdinLeavesCopy, "the launch", { signal });
    if (secrets) return secrets;
  }
  return undefined;
}

/** Runs of this process syncing into the same mirror take turns. */
const mirrorLocks = new KeyedMutex();

/** Where a synced folder is mirrored on a machine: one mirror per local folder, updated incrementally. */
function mirrorKey(localDirPath: string): string {
  return createHash("sha256").update(localDirPath).digest("hex").slice(0, 16);
}

/**
 * Starts a run eagerly and returns its handle. Input was validated by the plan; what is checked
 * here (storage reachability, resume source) still fails before anything is created.
 */
export function startRun(state: PlanState, request: TrainRequest): TrainingRun {
  const { options } = request;
  let storage = resolveStorage(state);
  /** Every storage the machine reaches for this run. */
  const runStorages = (checkpoints: Storage | undefined): (Storage | undefined)[] => [checkpoints, ...state.data.map((d) => (d.kind === "storage" ? d.storage : undefined)), state.outputs];
  // A provider that says its machines' stdin leaves a copy: refuse forwarding now, before anything is created.
  for (const s of runStorages(storage)) refuseStoredSecrets(s, state.provider.stdinLeavesCopy === true, ".train()");

  let storageDescriptor = storage ? descriptorOf(storage, state) : null;
  const resume = resolveResume(state, storage);
  const runId = options.runId ?? newRunId();
  const journal = RunJournal.create({
    version: 1,
    runId,
    createdAt: new Date().toISOString(),
    provider: state.provider.name,
    script: request.script,
    ...(storage && storageDescriptor ? { storage: { uri: storage.uri, descriptor: storageDescriptor } } : {}),
  });
  const session = new RunSession(journal, Date.now());
  const prelaunch = new AbortController();
  let launched: LaunchedRun | undefined;
  let cancelRequested: Exclude<CancelStrategy, "detach"> | undefined;

  let machine: Machine | undefined;
  // Machines this run lost; the provider hands out others first.
  const lostMachines: string[] = [];
  /** Provisions a machine, syncs, and starts the agent there; `launched` is set once it runs. */
  const launch = async (resumeFrom: AgentSpec["resume"]): Promise<LaunchedRun> => {
    const signal = prelaunch.signal;
    session.emit({ type: "phase", phase: "provisioning" });
    const spentUsd = session.meter.usd();
    const maxDurationMs = state.budget?.maxDurationMs;
    machine = await state.provider.provision({ runId, ...(lostMachines.length > 0 ? { avoid: [...lostMachines] } : {}), ...(maxDurationMs !== undefined ? { maxDurationMs } : {}) }, { signal });
    journal.update({ machine: machine.record });
    session.meter.start(machine.id, machine.hourlyPriceUsd, machine.launchedAtMs ?? Date.now());
    if (!storage && state.provider.transportFor) {
      // No storage configured: commit on the machine itself, readable through its transport.
      const onMachine = machineStorageFor(state.provider, machine);
      storage = onMachine;
      storageDescriptor = descriptorOf(onMachine, state);
      journal.update({ storage: { uri: onMachine.uri, descriptor: storageDescriptor } });
      session.emit({
        type: "warning",
        code: "CHECKPOINTS_ON_MACHINE",
        message: `No checkpoint storage configured: checkpoints are committed on ${machine.address} under ${onMachine.uri} and are lost with the machine. Configure .checkpoints({ storage }) to keep them elsewhere.`,
      });
    }
    const agent = await ensureAgent(machine, { signal });
    const target = machine;
    const runDir = posix.join(machine.rootDir, "runs", runId);
    let mirrorDir: string | null = null;
    const sync = state.sync;
    if (sync) {
      session.emit({ type: "phase", phase: "syncing" });
      const mirror = posix.join(machine.rootDir, "work", mirrorKey(sync.dir));
      mirrorDir = mirror;
      const synced = await mirrorLocks.run(`${machine.provider}:${machine.id}:${mirror}`, () =>
        syncTree({
          transport: target.transport,
          python: agent.python,
          agentPath: agent.path,
          localDir: sync.dir,
          remoteDir: mirror,
          ignore: sync.options.ignore ?? [],
          extraExcludes: state.checkpoints?.dir && !posix.isAbsolute(state.checkpoints.dir) ? [`/${state.checkpoints.dir}`] : [],
          hashCachePath: syncHashCachePath(sync.dir),
          signal,
          ...(sync.options.maxBytes !== undefined ? { maxBytes: sync.options.maxBytes } : {}),
          ...(sync.options.maxFiles !== undefined ? { maxFiles: sync.options.maxFiles } : {}),
        }),
      );
      for (const warning of synced.warnings) session.emit({ type: "warning", code: "SYNC", message: warning });
      session.emit({
        type: "sync",
        files: synced.files,
        bytes: synced.bytes,
        uploadedFiles: synced.uploadedFiles,
        uploadedBytes: synced.uploadedBytes,
        deletedFiles: synced.deletedFiles,
        durationMs: synced.durationMs,
      });
    }
    const workdir = state.sync || !machine.sharesLocalFilesystem ? posix.join(runDir, "code") : process.cwd();
    const spec = buildAgentSpec({
      state,
      runId,
      rootDir: machine.rootDir,
      workdir,
      mirrorDir,
      python: options.python ?? machine.python,
      script: request.script,
      options,
      storage: storageDescriptor,
      resume: resumeFrom,
      imds: machine.imds,
      shutdown: machine.shutdown,
      cost: { hourlyUsd: machine.hourlyPriceUsd, spentUsd },
      dataSources: state.data.map((d) => (d.kind === "path" ? { kind: "dir", path: d.path } : descriptorOf(d.storage, state))),
      outputs: state.outputs ? descriptorOf(state.outputs, state) : null,
    });
    const secrets = await machineSecretsFor(runStorages(storage), machine.transport.stdinLeavesCopy === true, signal);
    throwIfAborted(signal);
    const argv = [agent.python, agent.path, "launch", runDir];
    // Secrets travel only on the launch command's stdin, and only where it leaves no copy (never
    // over SSM); the agent keeps them in memory.
    const started = await machine.transport.exec(argv, { stdin: JSON.stringify(secrets ? { ...spec, secrets } : spec) });
    if (started.exitCode !== 0) {
      throw new CommandError(
        { command: argv.join(" "), host: machine.address, exitCode: started.exitCode, signal: started.signal, durationMs: started.durationMs, stdoutTail: started.stdoutTail, stderrTail: started.stderrTail },
        { code: "AGENT_FAILED" },
      );
    }
    journal.update({ runDir, agentPath: agent.path, agentPython: agent.python });
    launched = { machine, agentPath: agent.path, agentPython: agent.python, runDir };
    if (cancelRequested) await session.signal(launched, cancelRequested);
    return launched;
  };

  const recover = state.recover;
  const followOptions = { metricPattern: options.metricPattern, cleanup: options.cleanup ?? false, lostAfterMs: recover && (recover.onEvents ?? ["interruption", "host-lost"]).includes("host-lost") ? (recover.hostLostAfterMs ?? 60_000) : undefined };
  /** Why a followed run should restart on a new machine, or undefined to conclude it. */
  const restartReason = (outcome: FollowOutcome): string | undefined => {
    if (!recover) return undefined;
    const on = recover.onEvents ?? ["interruption", "host-lost"];
    if (outcome.kind === "host-lost" && on.includes("host-lost")) return `lost the machine (${outcome.message})`;
    if (outcome.kind === "end" && outcome.exit.status === "interrupted" && on.includes("interruption")) return "spot interruption";
    if (outcome.kind === "end" && outcome.exit.status === "failed" && outcome.exit.exitCode !== null && (recover.retryOnExitCodes ?? []).includes(outcome.exit.exitCode)) {
      return `trainer exited with code ${outcome.exit.exitCode}`;
    }
    return undefined;
  };

  const machineState = async (run: LaunchedRun): Promise<string> =>
    (await state.provider.describe?.(run.machine, { signal: AbortSignal.timeout(15_000) }).catch(() => "unknown")) ?? "unknown";

  /** Refuses a run whose estimate exceeds `.budget({ maxUsd })`, before anything is created. */
  const checkBudget = async (): Promise<void> => {
    const maxUsd = state.budget?.maxUsd;
    if (maxUsd === undefined) return;
    const estimate = state.provider.estimate
      ? await state.provider.estimate({ signal: prelaunch.signal })
      : { hourlyPriceUsd: state.provider.plan?.().hourlyPriceUsd ?? 0, basis: "provider" };
    const maxDurationMs = state.budget?.maxDurationMs;
    if (maxDurationMs !== undefined && (estimate.hourlyPriceUsd * maxDurationMs) / 3_600_000 > maxUsd) {
      const total = (estimate.hourlyPriceUsd * maxDurationMs) / 3_600_000;
      throw new RunctlError(
        "BUDGET_EXCEEDED",
        `The run could cost $${total.toFixed(2)} ($${estimate.hourlyPriceUsd}/h, ${estimate.basis}, for ${maxDurationMs / 3_600_000} h), more than its budget of $${maxUsd}; nothing was created. Raise maxUsd or lower maxDurationMs.`,
        { details: { estimateUsd: total, maxUsd, hourlyUsd: estimate.hourlyPriceUsd } },
      );
    }
  };

  /** While following: reports the accrued cost and stops the run once it reaches `maxUsd`. */
  const watchCost = (run: LaunchedRun): (() => void) => {
    const maxUsd = state.budget?.maxUsd;
    const timer = setInterval(() => {
      session.emitCost();
      if (maxUsd !== undefined && !session.budgetExceeded && session.meter.usd() >= maxUsd) {
        session.budgetExceeded = true;
        session.emit({ type: "warning", code: "BUDGET_EXCEEDED", message: `The run has cost $${session.meter.usd().toFixed(2)}, reaching its budget of $${maxUsd}: stopping it.` });
        void session.signal(run, "interrupt").catch(() => {});
      }
    }, options.costIntervalMs ?? 60_000);
    timer.unref();
    return () => clearInterval(timer);
  };

  const pipeline = async (): Promise<RunResult> => {
    let resumeFrom = resume;
    let restarts = 0;
    try {
      await checkBudget();
      for (;;) {
        const run = await launch(resumeFrom);
        const stopWatch = watchCost(run);
        let outcome = await session.follow(run, followOptions, state.provider).finally(stopWatch);
        // Unreachable is not gone: while the provider's own view says the machine runs, keep
        // following (a long network outage must not restart a healthy run).
        while (outcome.kind === "host-lost" && (await machineState(run)) === "running") {
          session.emit({ type: "warning", code: "STILL_RUNNING", message: `${run.machine.address} is unreachable but its provider reports it running; still waiting for it.` });
          const stop = watchCost(run);
          outcome = await session.follow(run, followOptions, state.provider).finally(stop);
        }
        const reason = restartReason(outcome);
        if (reason === undefined || session.cancelRequested || session.budgetExceeded) return await session.conclude(run, state.provider, outcome, followOptions);
        if (restarts >= (recover?.maxRestarts ?? 3)) {
          session.emit({ type: "warning", code: "MAX_RESTARTS", message: `${reason}, and the run has used its ${restarts} restart(s): it ends as interrupted.` });
          return await session.conclude(run, state.provider, outcome, followOptions, "interrupted");
        }
        restarts += 1;
        session.restarts = restarts;
        session.beginRestart(restarts, reason);
        lostMachines.push(run.machine.id);
        // The lost machine goes back (a pool host is freed, an instance terminated) before the next one.
        await session.release(run, state.provider);
        launched = undefined;
        await sleep(recover?.backoffMs ?? 1000, undefined, { signal: prelaunch.signal });
        // Resume from this run's own newest checkpoint (the agent verifies it, falling back past
        // corrupt ones); with none committed yet, start as the first machine did.
        const own = storage ? await checkpointStore(storage, runId).latest().catch(() => undefined) : undefined;
        if (own && storageDescriptor) resumeFrom = { storage: storageDescriptor, runId, name: null };
      }
    } catch (err) {
      if (!launched && machine) {
        await state.provider.release(machine).catch(() => {});
        session.meter.stop(machine.id);
      }
      if (!launched && cancelRequested && prelaunch.signal.aborted) {
        return session.finish("canceled", null, null, undefined, machine);
      }
      return session.fail(err);
    }
  };

  const result = pipeline();
  result.catch(() => {});

  const cancel = async (strategy: CancelStrategy): Promise<void> => {
    if (session.ended) return;
    session.cancelRequested = true;
    if (!launched) {
      // Nothing runs yet: any strategy stops the pipeline before the trainer starts.
      cancelRequested = strategy === "kill" ? "kill" : "interrupt";
      prelaunch.abort();
      return;
    }
    if (strategy === "detach") session.followAbort.abort();
    else await session.signal(launched, strategy);
  };

  if (options.signal) {
    const onAbort = (): void => void cancel(options.cancelStrategy ?? "interrupt").catch(() => {});
    if (options.signal.aborted) onAbort();
    else options.signal.addEventListener("abort", onAbort, { once: true });
  }

  return new TrainingRun({ runId, events: session.events, result, storage: () => storage, cancel });
}
