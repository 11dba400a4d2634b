import type { Machine } from "../providers/types.js";
import type { RunJournal } from "../run/journal.js";
import type { Storage, StorageDescriptor } from "../storage/types.js";
import type { BatchRunState } from "./batch-launch.js";
import type { RunSession, LaunchedRun } from "./run-session.js";
import type { RunResources, RunSpec } from "./run-spec.js";

/**
 * One started run's state, shared by the steps of {@link startRun} (launch, staging, budget,
 * recovery): what it was asked to do, and what has happened so far.
 */
export interface RunContext {
  readonly spec: RunSpec;
  readonly resources: RunResources;
  readonly runId: string;
  readonly journal: RunJournal;
  readonly session: RunSession;
  /** Aborted by a cancel that comes before the trainer runs: stops provisioning, syncing, the backoff. */
  readonly prelaunch: AbortController;
  /** The checkpoint storage: the spec's, or one on the machine chosen at the first launch. */
  checkpoints: { readonly storage: Storage; readonly descriptor: StorageDescriptor } | undefined;
  /** The machine of the current attempt, once provisioned. */
  machine: Machine | undefined;
  /** Set once the agent runs on `machine` (node 0 of a gang). */
  launched: LaunchedRun | undefined;
  /** Every node's launched run, by rank (one entry without `.nodes()`), once all agents run. */
  gang: LaunchedRun[] | undefined;
  /** A gang's machines while it is being provisioned and launched, released if the attempt fails. */
  gangMachines: Machine[];
  /** A cancel that arrived before launch: applied as soon as the agent runs. */
  cancelRequested: "interrupt" | "kill" | undefined;
  /** Machines this run lost; the provider hands out others first. */
  readonly lostMachines: string[];
  /** A batch provider's job (Slurm): the login machine, the job and the attempt being followed. */
  batch?: BatchRunState | undefined;
  /** Set when the client detached while a batch job waited: the job is left to run. */
  detachRequested?: boolean | undefined;
}
