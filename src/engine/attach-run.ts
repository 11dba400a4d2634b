import { setTimeout as sleep } from "node:timers/promises";
import { RunctlError } from "../errors/runctl-error.js";
import { local } from "../providers/local/local-provider.js";
import type { Provider } from "../providers/types.js";
import type { ExitEvent } from "../run/events.js";
import { RunJournal, readJournalFrom } from "../run/journal.js";
import type { RunResult } from "../run/run-result.js";
import { TrainingRun, type CancelStrategy } from "../run/training-run.js";
import { storageFromRecord } from "../storage/resolve-storage.js";
import { RunSession, type LaunchedRun } from "./run-session.js";
import { posix } from "node:path";
import type { Storage } from "../storage/types.js";
import { machineStorageFor } from "./run-storage.js";

/** Options of `Runctl.attach`. */
export interface AttachOptions {
  /** The provider the run was started with; needed for providers other than `local()`. @defaultValue `local()` for local runs */
  readonly provider?: Provider | undefined;
  /** Same as `.train()`'s `metricPattern`. */
  readonly metricPattern?: RegExp | undefined;
  /** How often to read the journal while another live process follows the run. @defaultValue 200 */
  readonly pollMs?: number | undefined;
  /** The run's checkpoint storage, for `run.checkpoints()` (for S3 with credentials of your own). @defaultValue rebuilt from the journal */
  readonly storage?: Storage | undefined;
}

/**
 * Reattaches to a run from its local journal: replays every recorded event (same `seq`), then
 * follows the run live. If the process that started it is gone, this process takes over following
 * from the byte cursor in the journal, so no log line is lost or repeated.
 */
export function attachRun(runId: string, options: AttachOptions = {}): TrainingRun {
  const journal = RunJournal.open(runId);
  const record = journal.record;
  const session = new RunSession(journal, Date.parse(record.createdAt));
  session.replay();
  // The storage given, else rebuilt from the record: a local folder directly, S3 with the default
  // credential chain, a folder on a remote machine through its provider's transport.
  const storage = (): Storage | undefined => {
    if (options.storage) return options.storage;
    const saved = record.storage;
    if (!saved) return undefined;
    return storageFromRecord(saved, (dirOnMachine) => {
      if (!record.machine) return undefined;
      return machineStorageFor(provider(), { record: record.machine, id: record.machine.id, rootDir: posix.dirname(dirOnMachine) });
    });
  };
  const provider = (): Provider => {
    if (options.provider) return options.provider;
    if (record.provider === "local") return local();
    throw new RunctlError("INVALID_ARGUMENT", `Run ${runId} ran on the ${record.provider} provider; pass { provider } to Runctl.attach.`);
  };
  let launched: LaunchedRun | undefined;
  const launchedRun = async (): Promise<LaunchedRun> => {
    if (launched) return launched;
    if (!record.machine || !record.runDir || !record.agentPath || !record.agentPython) {
      throw new RunctlError("RUN_NOT_FOUND", `Run ${runId} never started on a machine; there is nothing to attach to.`);
    }
    const p = provider();
    if (!p.reattach) throw new RunctlError("UNSUPPORTED", `The ${p.name} provider cannot reattach to machines.`);
    const machine = await p.reattach(record.machine);
    launched = { machine, agentPath: record.agentPath, agentPython: record.agentPython, runDir: record.runDir };
    return launched;
  };

  const lastExit = [...journal.events].reverse().find((e): e is ExitEvent => e.type === "exit");
  let active = session;
  const takeOver = async (): Promise<RunResult> => {
    try {
      return await active.followToEnd(await launchedRun(), provider(), { metricPattern: options.metricPattern });
    } catch (err) {
      return active.fail(err);
    }
  };
  const follow = async (): Promise<RunResult> => {
    if (lastExit) {
      session.events.end();
      return resultFromExit(session, lastExit);
    }
    // Whoever holds the writer lock (another process, or another attach in this one) follows the
    // machine: follow its journal instead of doubling up, until the run ends or the lock is free.
    let offset = journal.bytesRead;
    for (;;) {
      const claimed = await journal.tryClaimWriter();
      // Read after claiming: lines the last writer added before it let go are not lost.
      const { events, next } = readJournalFrom(runId, offset);
      offset = next;
      for (const event of events) {
        session.events.push(event);
        if (event.type === "exit") {
          if (claimed) journal.releaseWriter();
          session.events.end();
          return resultFromExit(session, event);
        }
      }
      if (claimed) break;
      await sleep(options.pollMs ?? 200);
    }
    // No writer (or it died mid-run): continue from the cursor last recorded, into the same stream.
    const fresh = RunJournal.open(runId);
    fresh.takeWriterFrom(journal);
    active = new RunSession(fresh, session.startedAt, session.events);
    return takeOver();
  };

  const result = follow();
  result.catch(() => {});
  const cancel = async (strategy: CancelStrategy): Promise<void> => {
    if (active.ended) return;
    if (strategy === "detach") active.followAbort.abort();
    else await active.signal(await launchedRun(), strategy);
  };
  return new TrainingRun({ runId, events: session.events, result, storage, cancel });
}

function resultFromExit(session: RunSession, exit: ExitEvent): RunResult {
  return {
    runId: session.runId,
    status: exit.status,
    exitCode: exit.exitCode,
    signal: exit.signal,
    durationMs: exit.durationMs,
    checkpoints: [...session.checkpoints],
    restarts: exit.restarts ?? 0,
    interruptions: exit.interruptions ?? [],
    cost: session.cost(),
    ...(exit.error ? { error: exit.error } : {}),
  };
}
