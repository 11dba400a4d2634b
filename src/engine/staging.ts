import { createHash } from "node:crypto";
import { posix } from "node:path";
import type { Machine } from "../providers/types.js";
import type { RunEventInput } from "../run/events.js";
import { syncTree } from "../sync/sync-tree.js";
import { KeyedMutex } from "../util/keyed-mutex.js";
import { createProgressThrottle } from "../util/progress-throttle.js";
import { syncHashCachePath } from "../util/runctl-home.js";
import type { RunContext } from "./run-context.js";

/** Runs of this process syncing into the same mirror take turns. */
const mirrorLocks = new KeyedMutex();

/** Where a synced folder is mirrored on a machine: one mirror per local folder, updated incrementally. */
function mirrorKey(localDirPath: string): string {
  return createHash("sha256").update(localDirPath).digest("hex").slice(0, 16);
}

/**
 * Stages the run's code on the machine: syncs the spec's folder into its mirror
 * (`<rootDir>/work/<hash>`), reporting `syncing`, warnings and a `sync` event through `emit` (the
 * run's stream unless given: a standby holds them back). Returns the mirror, or null when the spec
 * syncs nothing. A machine that already has the mirror (a pool host used before) gets only what changed.
 */
export async function stageCode(
  ctx: RunContext,
  machine: Machine,
  agent: { readonly python: string; readonly path: string },
  signal: AbortSignal,
  node?: number,
  emit: (event: RunEventInput) => void = (event) => void ctx.session.emit(event),
): Promise<string | null> {
  const { spec } = ctx;
  const sync = spec.sync;
  if (!sync) return null;
  // A gang syncs every node at once; the phase and the summary are reported once, for node 0.
  const first = node === undefined || node === 0;
  if (first) emit({ type: "phase", phase: "syncing" });
  const mirror = posix.join(machine.rootDir, "work", mirrorKey(sync.dir));
  const checkpointDir = spec.checkpoints.dir;
  // Only the bytes that change are counted: a machine already up to date reports no progress.
  const progress = createProgressThrottle((bytesDone, bytesTotal) =>
    emit({ type: "progress", phase: "sync", bytesDone, bytesTotal, ...(node !== undefined ? { node } : {}) }),
  );
  const synced = await mirrorLocks.run(`${machine.provider}:${machine.id}:${mirror}`, () =>
    syncTree({
      transport: machine.transport,
      python: agent.python,
      agentPath: agent.path,
      localDir: sync.dir,
      remoteDir: mirror,
      ignore: sync.ignore,
      // The trainer's checkpoint folder inside the synced tree is the run's, not the code's.
      extraExcludes: checkpointDir && !posix.isAbsolute(checkpointDir) ? [`/${checkpointDir}`] : [],
      hashCachePath: syncHashCachePath(sync.dir),
      signal,
      maxBytes: sync.maxBytes ?? undefined,
      maxFiles: sync.maxFiles ?? undefined,
      onProgress: (p) => {
        if ((p.phase === "uploading" || p.phase === "done") && p.totalBytes > 0) progress(p.bytes, p.totalBytes);
      },
    }),
  );
  for (const warning of synced.warnings) emit({ type: "warning", code: "SYNC", message: warning, node });
  if (!first) return mirror;
  emit({
    type: "sync",
    files: synced.files,
    bytes: synced.bytes,
    uploadedFiles: synced.uploadedFiles,
    uploadedBytes: synced.uploadedBytes,
    deletedFiles: synced.deletedFiles,
    durationMs: synced.durationMs,
  });
  return mirror;
}
