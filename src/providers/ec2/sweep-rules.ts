import { closeSync, openSync, readSync, fstatSync } from "node:fs";
import { join } from "node:path";
import { journalDir } from "../../run/journal.js";
import type { SweptResource, SweptResourceKind } from "../../engine/sweep-types.js";
import { TAG } from "./tags.js";

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
}

/**
 * The context the rules judge in.
 *
 * @example
 * ```ts
 * const ctx: SweepContext = { owner: "all", now: new Date(), graceMs: 900_000, liveRunIds: new Map(), runEnded: () => undefined };
 * ```
 */
export interface SweepContext {
  /** `runctl:owner` to sweep, or `"all"`. */
  readonly owner: string;
  readonly now: Date;
  readonly graceMs: number;
  /** Run ids carried by instances that are live (pending, running, stopping, stopped) and stay. */
  readonly liveRunIds: ReadonlyMap<string, string>;
  /** Whether a run is over (memoized by the caller). */
  readonly runEnded: (runId: string) => boolean | undefined;
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

function parseTime(value: string | undefined): Date | undefined {
  if (value === undefined || value === "") return undefined;
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : new Date(t);
}

/**
 * The sweep rules, for one resource (pure: everything comes from `subject` and `ctx`).
 *
 * 1. No `runctl:run-id` tag: not runctl's; ignored (never touched, never reported).
 * 2. `runctl:owner` other than `ctx.owner` (unless `"all"`): kept, "owned by …".
 * 3. `runctl:persistent=true`: kept, always.
 * 4. `runctl:expires-at` in the past: swept.
 * 5. Instances: swept when `runEnded(runId) === true`; otherwise kept.
 * 6. Volumes, key pairs, security groups, staging prefixes: kept while a live instance carries
 *    the same run id; else swept when the run is over, or when older than `graceMs` (from
 *    `runctl:created-at`, else the cloud's creation time); an unknown age is kept.
 *
 * @example
 * ```ts
 * judge({ kind: "volume", id: "vol-1", tags }, { owner: "me@box", now: new Date(), graceMs: 900_000, liveRunIds: new Map(), runEnded: () => undefined });
 * ```
 */
export function judge(subject: SweepSubject, ctx: SweepContext): SweepVerdict {
  const runId = subject.tags[TAG.runId];
  if (runId === undefined || runId === "") return { verdict: "ignore" };
  const owner = subject.tags[TAG.owner] ?? "";
  const base = { kind: subject.kind, id: subject.id, runId, owner };
  const keep = (reason: string): SweepVerdict => ({ verdict: "keep", resource: { ...base, reason }, reason });
  const sweep = (reason: string): SweepVerdict => ({ verdict: "sweep", resource: { ...base, reason } });

  if (ctx.owner !== "all" && owner !== ctx.owner) return keep(`owned by ${owner || "nobody"} (pass owner: "all" to include it)`);
  if (subject.tags[TAG.persistent] === "true") return keep("persistent");

  const expiresAt = parseTime(subject.tags[TAG.expiresAt]);
  if (expiresAt && expiresAt.getTime() <= ctx.now.getTime()) return sweep(`expired at ${expiresAt.toISOString()}`);
  const until = expiresAt ? `; expires at ${expiresAt.toISOString()}` : "";

  const ended = ctx.runEnded(runId);
  if (subject.kind === "instance") {
    return ended === true ? sweep(`run ${runId} is over`) : keep(`run ${runId} is not known to be over${until}`);
  }
  const liveInstance = ctx.liveRunIds.get(runId);
  if (liveInstance !== undefined) return keep(`instance ${liveInstance} of run ${runId} is still there${until}`);
  if (ended === true) return sweep(`run ${runId} is over`);
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
      let line: { e?: { type?: unknown; status?: unknown } };
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
