import { closeSync, openSync, readSync, fstatSync } from "node:fs";
import { join } from "node:path";
import { journalDir } from "../../util/runctl-home.js";
import type { SweptResource, SweptResourceKind } from "../sweep-types.js";
import { TAG, hasRunctlTagSet } from "./tags.js";

/**
 * Default grace period: resources younger than this are never swept for lack of a live instance (their run may still be launching).
 *
 * @example
 * ```ts
 * sweepEc2({ region: "us-east-1", graceMs: DEFAULT_SWEEP_GRACE_MS * 2 });
 * ```
 */
export const DEFAULT_SWEEP_GRACE_MS = 15 * 60_000;

/**
 * The facts the sweep rules need about one resource.
 *
 * @example
 * ```ts
 * const s: SweepSubject = { kind: "volume", id: "vol-0123456789abcdef0", tags: { "runctl:run-id": "r1" } };
 * ```
 */
export interface SweepSubject {
  readonly kind: SweptResourceKind;
  readonly id: string;
  /** Its tags (or, for a staging prefix, the marker's fields). */
  readonly tags: Readonly<Record<string, string>>;
  /** The cloud's own creation time, used when `runctl:created-at` is missing or unreadable. */
  readonly cloudCreatedAt?: Date | undefined;
  /** An instance's state (`pending`, `running`, `stopping`, `stopped`). */
  readonly state?: string | undefined;
}

/**
 * The context the rules judge in.
 *
 * @example
 * ```ts
 * const ctx: SweepContext = { owner: "all", now: new Date(), graceMs: 900_000, liveRunIds: new Map(), runEnded: () => undefined, force: false };
 * ```
 */
export interface SweepContext {
  /** `runctl:owner` to sweep, or `"all"`. */
  readonly owner: string;
  readonly now: Date;
  readonly graceMs: number;
  /** Run ids carried by instances that are live (pending, running, stopping, stopped) and stay. */
  readonly liveRunIds: ReadonlyMap<string, string>;
  /** The state of each instance in `liveRunIds`. @defaultValue every one counts as running */
  readonly instanceStates?: ReadonlyMap<string, string> | undefined;
  /** Whether a run is over (memoized by the caller). */
  readonly runEnded: (runId: string) => boolean | undefined;
  /** Sweep expired resources even when their run looks alive. @defaultValue false */
  readonly force?: boolean | undefined;
}

/**
 * A verdict: sweep it, keep it (reported), or not runctl's (never reported, never touched).
 *
 * @example
 * ```ts
 * const v: SweepVerdict = judge(subject, ctx); if (v.verdict === "sweep") console.log(v.resource.reason);
 * ```
 */
export type SweepVerdict =
  | { readonly verdict: "sweep"; readonly resource: SweptResource }
  | { readonly verdict: "keep"; readonly resource: SweptResource; readonly reason: string }
  | { readonly verdict: "ignore" };

/** Instance states in which a machine may be running its run's trainer. */
const RUNNING_STATES = new Set(["pending", "running", "stopping"]);

function parseTime(value: string | undefined): Date | undefined {
  if (value === undefined || value === "") return undefined;
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : new Date(t);
}

/**
 * The sweep rules, for one resource (pure: everything comes from `subject` and `ctx`).
 *
 * 1. Not runctl's full tag set in runctl's formats ({@link hasRunctlTagSet}): ignored (never
 *    touched, never reported). A hand-made `runctl:run-id` tag is not enough.
 * 2. `runctl:owner` other than `ctx.owner` (unless `"all"`): kept, "owned by …".
 * 3. `runctl:persistent=true`: kept, always.
 * 4. The run is over (`runEnded(runId) === true`): swept (not a snapshot: it is made to outlive
 *    its run, and only its own `runctl:expires-at` ends it).
 * 5. The run looks alive: an instance of it is pending, running or stopping (the instance
 *    itself, or, for its volumes, key pair, group, snapshots and staging folder, any instance
 *    carrying its run id). Kept, even past `runctl:expires-at`: an expired live run is swept
 *    only with `ctx.force`. (While a client follows the run it renews `runctl:expires-at`, and
 *    without a follower expiry is the run's own time budget plus a margin, so a live run that
 *    expired is one nobody follows and whose budget is over.)
 * 6. `runctl:expires-at` has passed: swept (a stopped instance, or a resource whose run has no
 *    live instance). A snapshot that has not expired is kept.
 * 7. Instances: otherwise kept. Other resources: kept while a stopped instance carries the run
 *    id; else swept when older than `graceMs` (from `runctl:created-at`, else the cloud's
 *    creation time): the grace protects a run that is still launching.
 *
 * @example
 * ```ts
 * judge({ kind: "volume", id: "vol-1", tags }, { owner: "me@box", now: new Date(), graceMs: 900_000, liveRunIds: new Map(), runEnded: () => undefined });
 * ```
 */
export function judge(subject: SweepSubject, ctx: SweepContext): SweepVerdict {
  if (!hasRunctlTagSet(subject.tags)) return { verdict: "ignore" };
  const runId = subject.tags[TAG.runId]!;
  const owner = subject.tags[TAG.owner] ?? "";
  const base = { kind: subject.kind, id: subject.id, runId, owner };
  const keep = (reason: string): SweepVerdict => ({ verdict: "keep", resource: { ...base, reason }, reason });
  const sweep = (reason: string): SweepVerdict => ({ verdict: "sweep", resource: { ...base, reason } });

  if (ctx.owner !== "all" && owner !== ctx.owner) return keep(`owned by ${owner || "nobody"} (pass owner: "all" to include it)`);
  if (subject.tags[TAG.persistent] === "true") return keep("persistent");

  // A snapshot is made to outlive its run: only its own expiry ends it, never the run's end or age.
  const snapshot = subject.kind === "snapshot";
  const ended = snapshot ? undefined : ctx.runEnded(runId);
  if (ended === true) return sweep(`run ${runId} is over`);

  const expiresAt = parseTime(subject.tags[TAG.expiresAt]);
  const expired = expiresAt !== undefined && expiresAt.getTime() <= ctx.now.getTime();
  const until = expiresAt ? `; expires at ${expiresAt.toISOString()}` : "";
  const liveInstance = subject.kind === "instance" ? subject.id : ctx.liveRunIds.get(runId);
  const liveState = subject.kind === "instance" ? (subject.state ?? "running") : liveInstance !== undefined ? (ctx.instanceStates?.get(liveInstance) ?? "running") : undefined;
  if (liveInstance !== undefined && liveState !== undefined && RUNNING_STATES.has(liveState)) {
    if (!expired) return keep(subject.kind === "instance" ? `run ${runId} is not known to be over${until}` : `instance ${liveInstance} of run ${runId} is still there${until}`);
    const why = `expired at ${expiresAt!.toISOString()}, but run ${runId} looks alive (instance ${liveInstance} is ${liveState} and the run is not known to be over)`;
    return ctx.force ? sweep(`${why}; swept with force`) : keep(`${why}; pass force to sweep it`);
  }
  if (expired) return sweep(`expired at ${expiresAt!.toISOString()}`);
  if (snapshot) return keep(expiresAt ? `expires at ${expiresAt.toISOString()}` : "no runctl:expires-at");
  if (subject.kind === "instance") return keep(`run ${runId} is not known to be over${until}`);
  if (liveInstance !== undefined) return keep(`instance ${liveInstance} of run ${runId} is still there${until}`);
  const createdAt = parseTime(subject.tags[TAG.createdAt]) ?? subject.cloudCreatedAt;
  if (!createdAt) return keep(`no live instance of run ${runId}, but its age is unknown${until}`);
  const graceEnds = createdAt.getTime() + ctx.graceMs;
  if (graceEnds > ctx.now.getTime()) return keep(`in the grace period until ${new Date(graceEnds).toISOString()} (its run may still be starting)`);
  return sweep(`no live instance of run ${runId} and older than the ${Math.round(ctx.graceMs / 60_000)} min grace period`);
}

/** Bytes read from the end of a journal: the exit event is always its last line. */
const JOURNAL_TAIL_BYTES = 64 * 1024;

/**
 * The default `runEnded` of the sweep: reads `$RUNCTL_HOME/runs/<runId>/journal.jsonl` and says
 * whether its last event is the run's `exit` (any status but `detached`, which means only that a
 * client stopped following). `undefined` when this machine has no journal of that run (another
 * machine started it, or it is a label like `volume:<name>`), `false` when the journal has no exit.
 *
 * @example
 * ```ts
 * runEndedFromJournal("20261121-152117-utfo5u"); // true once the run's exit event is recorded
 * ```
 */
export function runEndedFromJournal(runId: string): boolean | undefined {
  // A tag value becomes a path: only plain names, never `..` or separators.
  if (!/^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$/.test(runId) || runId.includes("..")) return undefined;
  let fd: number;
  try {
    fd = openSync(join(journalDir(runId), "journal.jsonl"), "r");
  } catch {
    return undefined;
  }
  try {
    const size = fstatSync(fd).size;
    const length = Math.min(size, JOURNAL_TAIL_BYTES);
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, size - length);
    const lines = buf.toString("utf8").split("\n");
    for (let i = lines.length - 1; i >= 0; i--) {
      const raw = lines[i]!.trim();
      if (raw === "") continue;
      let line: { e?: { type?: unknown; status?: unknown } | undefined };
      try {
        line = JSON.parse(raw) as typeof line;
      } catch {
        continue; // a torn last line after a crash, or the cut start of the tail
      }
      return line.e?.type === "exit" && line.e.status !== "detached";
    }
    return false;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}
