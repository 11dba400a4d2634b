import { listRecordedResources, recordResourceDeleted } from "../../ledger/resource-ledger.js";
import type { BatchEngine } from "../batch-types.js";
import type { KeptResource, SweepFailure, SweepReport, SweptResource } from "../sweep-types.js";
import type { Machine, SweepOptions } from "../types.js";

/** What a Slurm sweep needs from its provider. */
export interface SlurmSweepContext {
  readonly connect: (signal: AbortSignal | undefined) => Promise<Machine>;
  readonly batch: BatchEngine;
  /** `user@host:port` of the login node (the ledger's key). */
  readonly loginId: string;
}

const RUN_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/**
 * Cancels runctl's own jobs whose run is over, and nothing else: only the login user's jobs whose
 * comment is `runctl:<runId>` (what runctl submits) are considered. A run is over when its client
 * concluded it (the `ended` marker in its folder) or its node 0 recorded an exit other than an
 * interruption; `force` takes the others too. Ledger records of jobs Slurm no longer lists are closed.
 */
export async function sweepSlurm(ctx: SlurmSweepContext, options: SweepOptions): Promise<SweepReport> {
  const dryRun = options.dryRun === true;
  const login = await ctx.connect(options.signal);
  const found: SweptResource[] = [];
  const deleted: SweptResource[] = [];
  const kept: KeptResource[] = [];
  const errors: SweepFailure[] = [];
  try {
    const opts = options.signal ? { signal: options.signal } : {};
    const user = (await login.transport.exec(["id", "-un"], opts)).stdout.trim();
    const listed = await login.transport.exec(["squeue", "-h", "-u", user, "-o", "%i|%T|%k"], opts);
    if (listed.exitCode !== 0) throw new Error(`squeue failed on ${login.address} (exit ${listed.exitCode}): ${listed.stderrTail.trim()}`);
    const jobs = listed.stdout
      .split("\n")
      .map((l) => l.trim().split("|"))
      .flatMap(([id, state, comment]) => {
        const runId = comment?.startsWith("runctl:") ? comment.slice("runctl:".length) : undefined;
        return id && /^\d+$/.test(id) && runId && RUN_ID.test(runId) ? [{ id, state: state ?? "", runId }] : [];
      });
    for (const job of jobs) {
      const resource = (reason: string): SweptResource => ({ kind: "job", id: job.id, runId: job.runId, owner: `${user}@${login.address}`, reason });
      const over = await runOver(login, `${login.rootDir}/runs/${job.runId}`, opts);
      if (!over && !options.force) {
        kept.push({ resource: resource(`${job.state.toLowerCase()}`), reason: "run not over" });
        continue;
      }
      const r = resource(over ?? `forced (${job.state.toLowerCase()}, run not known to be over)`);
      found.push(r);
      if (dryRun) continue;
      try {
        await ctx.batch.cancel(login, job.id, opts);
        recordResourceDeleted("job", `${job.id}@${ctx.loginId}`);
        deleted.push(r);
      } catch (err) {
        errors.push({ resource: r, message: (err as Error).message });
      }
    }
    if (!dryRun) {
      // Jobs of this login in the ledger that Slurm no longer lists have ended on their own.
      const queued = new Set(jobs.map((j) => j.id));
      for (const rec of listRecordedResources({ includeDeleted: false })) {
        if (rec.kind !== "job" || rec.provider !== "slurm" || !rec.id.endsWith(`@${ctx.loginId}`)) continue;
        if (!queued.has(rec.id.slice(0, rec.id.indexOf("@")))) recordResourceDeleted("job", rec.id);
      }
    }
  } finally {
    await login.transport.close().catch(() => {});
  }
  return { dryRun, found, deleted, kept, errors };
}

/** Why a run is over, or undefined while it may go on (running, or requeued after an interruption). */
async function runOver(login: Machine, jobDir: string, opts: { readonly signal?: AbortSignal | undefined }): Promise<string | undefined> {
  const script = [
    'test -e "$1/ended" && { echo ended; exit 0; }',
    'latest=$(ls -t "$1/attempts" 2>/dev/null | head -n 1)',
    '[ -n "$latest" ] && tail -n 1 "$1/attempts/$latest/node0/events.jsonl" 2>/dev/null',
    "exit 0",
  ].join("\n");
  const r = await login.transport.exec(["sh", "-c", script, "sh", jobDir], opts);
  const out = r.stdout.trim();
  if (out === "ended") return "run is over (its client concluded it)";
  try {
    const last = JSON.parse(out) as { type?: unknown; status?: unknown };
    if (last.type === "exit" && last.status !== "interrupted") return `run is over (node 0 ${String(last.status)})`;
  } catch {
    // no exit recorded yet
  }
  return undefined;
}
