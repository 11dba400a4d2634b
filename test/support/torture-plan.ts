/**
 * How the torture test starts a run, shared by the test process and the client child process
 * (torture-client.ts), so both start exactly the same run. Public API only.
 */
import { fileURLToPath } from "node:url";
import { Runctl, sshHosts, type HyperparamValue, type ResumeSource, type SshHost, type Storage, type TrainingRun } from "runctl";
import { s3 } from "runctl/aws";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS } from "./s3-server.js";

/** The folder synced to the host: just the torture trainer. */
export const TORTURE_FIXTURE_DIR = fileURLToPath(new URL("../fixtures/torture", import.meta.url));
/** The trainer, relative to {@link TORTURE_FIXTURE_DIR}. */
export const TORTURE_SCRIPT = "torture_trainer.py";

/**
 * Every size and timing knob of the torture loop, in one place. Sized so one iteration takes a few
 * seconds on a 2-core machine while most of the trainer's time is spent writing checkpoints (a kill
 * at a random moment lands mid-write often).
 */
export const TORTURE_KNOBS = {
  /** Trainer steps per run; one `line <n>` per step. */
  steps: 12,
  /**
   * Steps when the agent is killed: a longer run, so a trainer that outlives its agent is still
   * running when the run is reported ended (a correct runctl ends it at once, so this costs nothing).
   */
  agentKillSteps: 40,
  /** A checkpoint every this many steps (4 per run: folder, `last.bin`, renamed file, `last.bin` rewritten). */
  ckptEvery: 3,
  /** Bytes per checkpoint, in KiB (2 MiB). */
  ckptKb: 2048,
  /** The trainer writes checkpoints in chunks of this many KiB... */
  chunkKb: 128,
  /** ...sleeping this long (s) after each chunk: ~0.3 s per checkpoint, well under `settleMs`'s pause. */
  chunkSleepS: 0.02,
  /** Sleep per step (s). */
  stepSleepS: 0.05,
  /** The agent commits an entry unchanged for this long (ms). */
  settleMs: 500,
  /** Retention: committed checkpoints kept. */
  keep: 3,
  /** SIGTERM-to-SIGKILL grace (ms). */
  graceMs: 2_000,
  /** Whether the trainer starts a helper that daemonizes out of its process group. */
  daemonChild: true,
  /** The helper ends by itself after this long (s), so nothing lingers for long even if all else fails. */
  daemonChildS: 90,
  /** A run (or a reattach) that has not ended after this long is a violation ("run-hung"). */
  runTimeoutMs: 60_000,
  /** After a run ended, its processes get this long to exit before they count as left over. */
  leftoverGraceMs: 2_000,
  /** The kill comes at a uniformly random moment in [0, this) ms after the trainer starts (~its run time). */
  killWindowMs: 2_000,
  /** The same for agent kills, whose runs are longer (`agentKillSteps`): several rewrites of `last.bin` fall in it. */
  agentKillWindowMs: 5_000,
  /** Host partition duration range (ms). */
  partitionMs: [1_500, 4_000] as const,
  /** S3 server outage duration range (ms). */
  s3OutageMs: [500, 3_000] as const,
} as const;

/** The run's checkpoint storage, in a form that crosses to a child process. */
export type TortureStorageSpec =
  | { readonly kind: "machine" }
  | { readonly kind: "s3"; readonly uri: string; readonly endpoint: string };

/** Everything needed to start (or reattach to) a torture run, JSON-serialisable. */
export interface TortureRunSpec {
  readonly host: SshHost;
  readonly storage: TortureStorageSpec;
  readonly runId: string;
  readonly hyperparams: Readonly<Record<string, HyperparamValue>>;
}

/** The Storage object of a spec; undefined for the host's own checkpoint folder (the default without storage). */
export function storageOf(spec: TortureStorageSpec): Storage | undefined {
  if (spec.kind === "machine") return undefined;
  return s3(spec.uri, { ...S3RVER_CLIENT_SETTINGS, endpoint: spec.endpoint, credentials: TEST_AWS_CREDENTIALS });
}

/** The trainer's hyperparameters from the knobs (plus overrides). */
export function trainerHyperparams(overrides: Readonly<Record<string, HyperparamValue>> = {}): Record<string, HyperparamValue> {
  const k = TORTURE_KNOBS;
  return {
    steps: k.steps,
    "ckpt-every": k.ckptEvery,
    "ckpt-kb": k.ckptKb,
    "chunk-kb": k.chunkKb,
    "chunk-sleep": k.chunkSleepS,
    "step-sleep": k.stepSleepS,
    "spawn-helper": k.daemonChild ? 1 : 0,
    "helper-s": k.daemonChildS,
    ...overrides,
  };
}

/** Starts the run a spec describes (optionally resuming from another run's checkpoints). */
export function startTortureRun(spec: TortureRunSpec, resumeFrom?: ResumeSource): TrainingRun {
  const storage = storageOf(spec.storage);
  let plan = Runctl.instance(sshHosts(spec.host))
    .sync(TORTURE_FIXTURE_DIR)
    .checkpoints({ ...(storage ? { storage } : {}), keep: TORTURE_KNOBS.keep, settleMs: TORTURE_KNOBS.settleMs });
  if (resumeFrom !== undefined) plan = plan.resumeFrom(resumeFrom);
  return plan.train(TORTURE_SCRIPT, { hyperparams: spec.hyperparams, runId: spec.runId, graceMs: TORTURE_KNOBS.graceMs });
}

/** Reattaches to a torture run started by another process. */
export function attachTortureRun(spec: TortureRunSpec): TrainingRun {
  const storage = storageOf(spec.storage);
  return Runctl.attach(spec.runId, { provider: sshHosts(spec.host), ...(storage ? { storage } : {}) });
}
