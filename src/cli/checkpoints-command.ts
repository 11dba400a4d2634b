import { Runctl, type CheckpointStore, type CheckpointVerification } from "../index.js";
import { storageFromRecord } from "../storage/resolve-storage.js";
import { output, table, formatTime, type CliIo } from "./cli-output.js";
import { formatBytes } from "../util/format-bytes.js";
import { CliError, EXIT_CODES, type ExitCode } from "./cli-errors.js";
import { readRunJournal, type StoredRunRecord } from "./run-journals.js";
import { attachOptionsFor } from "./run-provider.js";

/**
 * Options of {@link checkpointsCommand}.
 *
 * @example
 * ```ts
 * const options: CheckpointsCommandOptions = { runId: "20261121-152117-utfo5u", verify: true, json: true };
 * ```
 */
export interface CheckpointsCommandOptions {
  /** The run. */
  readonly runId: string;
  /** Re-read every file and check its sha256. @defaultValue false */
  readonly verify: boolean;
  /** One JSON document. @defaultValue false */
  readonly json: boolean;
}

/**
 * `runctl checkpoints RUN`: the run's committed checkpoints, oldest first, read from the storage
 * its journal records; with `verify`, each is re-read and checked (exit 1 if any is corrupt).
 *
 * @example
 * ```ts
 * const code = await checkpointsCommand({ runId, verify: true, json: true }, io);
 * ```
 */
export async function checkpointsCommand(options: CheckpointsCommandOptions, io: CliIo): Promise<ExitCode> {
  const o = output(io);
  const { record } = readRunJournal(options.runId);
  const opened = openStore(record, (m) => o.err(`runctl: ${m}`));
  try {
    const call = io.signal ? { signal: io.signal } : {};
    const checkpoints = await opened.store.list(call);
    const verifications: (CheckpointVerification | undefined)[] = [];
    for (const checkpoint of checkpoints) verifications.push(options.verify ? await checkpoint.verify(call) : undefined);
    const rows = checkpoints.map((c, i) => ({
      name: c.name,
      step: c.step,
      seq: c.seq,
      files: c.manifest.files.length,
      bytes: c.totalBytes,
      committedAt: c.createdAt.toISOString(),
      ...(verifications[i] ? { verified: verifications[i] } : {}),
    }));
    const corrupt = verifications.filter((v) => v !== undefined && !v.ok).length;
    if (options.json) {
      o.json({ schemaVersion: 1, runId: options.runId, storage: opened.uri, checkpoints: rows });
    } else {
      if (rows.length === 0) o.err(`runctl: run ${options.runId} has no committed checkpoint in ${opened.uri}`);
      const header = ["NAME", "STEP", "FILES", "BYTES", "COMMITTED", ...(options.verify ? ["VERIFIED"] : [])];
      const cells = rows.map((r) => [
        r.name,
        r.step === null ? "-" : String(r.step),
        String(r.files),
        formatBytes(r.bytes),
        formatTime(r.committedAt),
        ...(r.verified ? [r.verified.ok ? "ok" : `CORRUPT: ${r.verified.problems.map((p) => `${p.path} ${p.reason}`).join("; ")}`] : []),
      ]);
      for (const line of table([header, ...cells])) o.out(line);
    }
    if (corrupt > 0) {
      o.err(`runctl: ${corrupt} of ${rows.length} checkpoints of run ${options.runId} failed verification`);
      return EXIT_CODES.failed;
    }
    return EXIT_CODES.ok;
  } finally {
    await opened.close();
  }
}

interface OpenedStore {
  readonly store: CheckpointStore;
  readonly uri: string;
  close(): Promise<void>;
}

/**
 * The run's checkpoint store, rebuilt from its journal as `Runctl.attach` does: a local folder or S3
 * directly; checkpoints kept on the machine (runs without storage) through an attached handle,
 * whose following is detached again once read.
 */
function openStore(record: StoredRunRecord, warn: (message: string) => void): OpenedStore {
  const saved = record.storage;
  if (!saved) {
    throw new CliError("CHECKPOINT_NOT_FOUND", `Run ${record.runId} has no checkpoint storage recorded (it never reached its machine).`);
  }
  const noop = async (): Promise<void> => {};
  // S3 or a local folder directly (the resolver, as `Runctl.attach` does); on a machine, below.
  const direct = storageFromRecord(saved, () => undefined);
  if (direct) return { store: Runctl.checkpoints(direct, record.runId), uri: saved.uri, close: noop };
  const run = Runctl.attach(record.runId, attachOptionsFor(record, warn));
  return { store: run.checkpoints(), uri: saved.uri, close: () => run.cancel({ strategy: "detach" }).catch(() => {}) };
}
