import { setTimeout as sleep } from "node:timers/promises";
import { checkpointStore } from "../checkpoints/checkpoint-store.js";
import { RunJournal } from "../run/journal.js";
import { newRunId } from "../run/run-id.js";
import type { RunResult } from "../run/run-result.js";
import { TrainingRun, type CancelStrategy } from "../run/training-run.js";
import { endBatchJob, explainBatchEnd, launchBatch } from "./batch-launch.js";
import { checkBudget, watchCost } from "./budget.js";
import { concludeAttempt, followAttempt, launchGang, releaseAttempt } from "./gang.js";
import { launch } from "./launch.js";
import { followOptionsFor, restartReason } from "./recovery.js";
import type { RunContext } from "./run-context.js";
import { RunSession, type FollowOptions } from "./run-session.js";
import { canPrepareAhead, prepareStandby, type Standby } from "./standby.js";
import { storageOf, type RunResources, type RunSpec } from "./run-spec.js";

/**
 * Starts a run eagerly and returns its handle. The spec was validated (and its storages checked)
 * by the plan, so nothing here throws before the journal exists; failures end the run as `failed`.
 * The steps live in their own files: provisioning, staging, launch, budget, recovery.
 */
export function startRun(spec: RunSpec, resources: RunResources): TrainingRun {
  const provider = resources.provider;
  const checkpointsRef = spec.checkpoints.storage;
  const runId = spec.runId ?? newRunId();
  const journal = RunJournal.create({
    version: 1,
    runId,
    createdAt: new Date().toISOString(),
    provider: provider.name,
    script: spec.script,
    ...(checkpointsRef ? { storage: { uri: checkpointsRef.uri, descriptor: checkpointsRef.descriptor } } : {}),
  });
  const ctx: RunContext = {
    spec,
    resources,
    runId,
    journal,
    session: new RunSession(journal, Date.now()),
    prelaunch: new AbortController(),
    checkpoints: checkpointsRef ? { storage: storageOf(resources, checkpointsRef), descriptor: checkpointsRef.descriptor } : undefined,
    machine: undefined,
    launched: undefined,
    gang: undefined,
    gangMachines: [],
    cancelRequested: undefined,
    lostMachines: [],
  };
  const { session } = ctx;
  const followOptions = followOptionsFor(spec);

  // A batch job outlives its agents only until the run is settled (a detached run keeps it).
  const settle = async (concluded: Promise<RunResult>): Promise<RunResult> => {
    const result = await concluded;
    if (ctx.batch) await endBatchJob(ctx, result.status === "detached");
    return result;
  };

  // A replacement prepared while an interrupted attempt saves (see standby.ts); adopted by the next
  // launch, or given back when the run does not restart.
  const spare: { standby?: Standby | undefined } = {};
  // Read through a call: the follow's callback sets it, which the compiler's narrowing cannot see.
  const pendingStandby = (): Standby | undefined => spare.standby;
  const dropStandby = async (): Promise<void> => {
    const s = spare.standby;
    spare.standby = undefined;
    await s?.discard();
  };

  const pipeline = async (): Promise<RunResult> => {
    let resumeFrom = spec.resume;
    let restarts = 0;
    try {
      await checkBudget(ctx);
      for (;;) {
        ctx.gangMachines = [];
        // A batch provider (Slurm): one job whose allocation is the gang; else machine by machine.
        const next = spare.standby;
        spare.standby = undefined; // from here on it is the launch's: released by it, or by the catch below as ctx.machine
        const runs = provider.batch ? await launchBatch(ctx, resumeFrom) : spec.nodes ? await launchGang(ctx, resumeFrom) : [await launch(ctx, resumeFrom, next)];
        ctx.gangMachines = [];
        const stopWatch = watchCost(ctx, runs[0]!);
        // A spot notice starts the replacement now, while the agent still saves and commits: only the
        // new trainer waits for the old attempt's end.
        const current = runs[0]!.machine;
        const options: FollowOptions = canPrepareAhead(ctx, restarts)
          ? {
              ...followOptions,
              onEvent: (event) => {
                if (event.type === "interruption" && !spare.standby && !session.cancelRequested) spare.standby = prepareStandby(ctx, current);
              },
            }
          : followOptions;
        // Unreachable is not gone: while the provider's own view says a machine runs, it is still
        // followed (a long network outage must not restart a healthy run). In a gang, the first node
        // that ends badly stops the others and decides.
        let ended = await followAttempt(ctx, runs, options, provider).finally(stopWatch);
        if (provider.batch) ended = await explainBatchEnd(ctx, ended);
        const outcome = ended.outcome;
        const reason = restartReason(spec, outcome);
        if (reason === undefined || session.cancelRequested || session.budgetExceeded) {
          await dropStandby();
          return await settle(concludeAttempt(ctx, runs, ended, followOptions, provider));
        }
        if (restarts >= (spec.recover?.maxRestarts ?? 3)) {
          await dropStandby();
          session.emit({ type: "warning", code: "MAX_RESTARTS", message: `${reason}${runs.length > 1 ? ` on node ${ended.rank}` : ""}, and the run has used its ${restarts} restart(s): it ends as interrupted.` });
          return await settle(concludeAttempt(ctx, runs, ended, followOptions, provider, "interrupted"));
        }
        restarts += 1;
        session.restarts = restarts;
        session.beginRestart(restarts, runs.length > 1 ? `${reason} (node ${ended.rank})` : reason);
        ctx.lostMachines.push(runs[ended.rank]!.machine.id);
        // The lost machine goes back (a pool host is freed, an instance terminated) before the next
        // one; a gang is restarted whole, on replacements for what it lost.
        await releaseAttempt(ctx, runs, provider);
        ctx.launched = undefined;
        ctx.gang = undefined;
        // The backoff paces provisioning; a replacement already prepared has nothing left to pace.
        if (!(await pendingStandby()?.ready)) await sleep(spec.recover?.backoffMs ?? 1000, undefined, { signal: ctx.prelaunch.signal });
        // Resume from this run's own newest checkpoint (the agent verifies it, falling back past
        // corrupt ones); with none committed yet, start as the first machine did.
        const own = ctx.checkpoints ? await checkpointStore(ctx.checkpoints.storage, runId).latest().catch(() => undefined) : undefined;
        if (own && ctx.checkpoints) resumeFrom = { storage: ctx.checkpoints.descriptor, runId, name: null };
      }
    } catch (err) {
      await dropStandby();
      const machine = ctx.machine;
      if (ctx.batch) {
        // The job (queued, or between attempts) goes, unless the client detached; the login machine closes.
        await endBatchJob(ctx, ctx.detachRequested === true);
        if (ctx.detachRequested) return session.detach(ctx.machine);
      } else if (!ctx.launched && machine) {
        await provider.release(machine).catch(() => {});
        session.meter.stop(machine.id);
      }
      // A gang that could not be completed gives back what it got (node 0 is `machine`).
      for (const m of ctx.gangMachines) {
        if (m === machine && !ctx.launched) continue;
        await provider.release(m).catch(() => {});
        session.meter.stop(m.id);
      }
      if (!ctx.launched && ctx.cancelRequested && ctx.prelaunch.signal.aborted) {
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
    if (!ctx.launched && strategy === "detach" && ctx.batch?.jobId) {
      // A batch job already submitted (queued, or between attempts) goes on without this client.
      ctx.detachRequested = true;
      ctx.prelaunch.abort();
      return;
    }
    if (!ctx.launched) {
      // Nothing runs yet: any strategy stops the pipeline before the trainer starts.
      ctx.cancelRequested = strategy === "kill" ? "kill" : "interrupt";
      ctx.prelaunch.abort();
      return;
    }
    if (strategy === "detach") session.followAbort.abort();
    // A batch job is signalled whole, through any of its nodes.
    else await Promise.all((provider.batch ? [ctx.launched] : (ctx.gang ?? [ctx.launched])).map((run) => session.signal(run, strategy)));
  };

  const signal = resources.signal;
  if (signal) {
    const onAbort = (): void => void cancel(spec.cancelStrategy).catch(() => {});
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  }

  return new TrainingRun({ runId, events: session.events, result, storage: () => ctx.checkpoints?.storage, cancel });
}
