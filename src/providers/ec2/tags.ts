import { RunctlError } from "../../errors/runctl-error.js";
import { localOwner } from "../../util/owner.js";

/** Tag keys runctl puts on everything it creates. The sweeper only ever touches resources with `runctl:run-id`. */
export const TAG = {
  runId: "runctl:run-id",
  owner: "runctl:owner",
  createdAt: "runctl:created-at",
  expiresAt: "runctl:expires-at",
  persistent: "runctl:persistent",
  name: "Name",
} as const;

/**
 * Run ids runctl writes in `runctl:run-id`: a run's id (`newRunId()`, or the `runId` a user gave,
 * which `.train()` checks against the same pattern), an instance id (an SSM staging folder of a
 * reattached transport), or a label of a resource made outside a run (`volume:<name or id>`).
 */
const RUN_ID_TAG = /^(?:[A-Za-z0-9][A-Za-z0-9_-]{0,127}|volume:[^\u0000-\u001f]{1,248})$/;
/** Times runctl writes: `Date.prototype.toISOString()`, to the millisecond, in UTC. */
const ISO_TIME_TAG = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/**
 * Checks a run id given for a `runctl:run-id` tag (EBS volumes and snapshots made outside a run):
 * the format the sweeper recognizes as runctl's. INVALID_ARGUMENT otherwise.
 *
 * @example
 * ```ts
 * validateRunIdTag(run.runId);
 * ```
 */
export function validateRunIdTag(value: unknown): string {
  if (typeof value !== "string" || !RUN_ID_TAG.test(value)) {
    throw new RunctlError("INVALID_ARGUMENT", `runId must be a run id (letters, digits, '-' and '_', at most 128), got ${JSON.stringify(value)}.`);
  }
  return value;
}

function isIsoTime(value: string | undefined): boolean {
  return value !== undefined && ISO_TIME_TAG.test(value) && !Number.isNaN(Date.parse(value));
}

/**
 * Whether tags are runctl's own: the full set runctl writes on everything it creates
 * (`runctl:run-id`, `runctl:owner`, `runctl:created-at`), each in the format runctl writes, and
 * the optional ones (`runctl:expires-at`, `runctl:persistent`) well-formed when present. A resource
 * someone tagged by hand with a `runctl:run-id` alone is not runctl's, and the sweeper never
 * touches it.
 *
 * @example
 * ```ts
 * hasRunctlTagSet({ "runctl:run-id": "20261121-151300-k3f9a2", "runctl:owner": "me@box", "runctl:created-at": "2026-11-21T15:13:00.000Z" }); // true
 * hasRunctlTagSet({ "runctl:run-id": "mine" }); // false
 * ```
 */
export function hasRunctlTagSet(tags: Readonly<Record<string, string>>): boolean {
  const runId = tags[TAG.runId];
  const owner = tags[TAG.owner];
  if (runId === undefined || !RUN_ID_TAG.test(runId)) return false;
  if (owner === undefined || owner.length === 0 || owner.length > 200) return false;
  if (!isIsoTime(tags[TAG.createdAt])) return false;
  if (tags[TAG.expiresAt] !== undefined && !isIsoTime(tags[TAG.expiresAt])) return false;
  if (tags[TAG.persistent] !== undefined && tags[TAG.persistent] !== "true") return false;
  return true;
}

/** The default owner tag: `user@host` of this process. */
export const defaultOwner = localOwner;

/** Inputs of {@link runctlTags}. */
export interface RunctlTagInput {
  /** The run, or a stable label for resources made outside a run (`volume:<name>`). */
  readonly runId: string;
  readonly owner: string;
  readonly now: Date;
  /** How long after `now` the resource may be swept; null for never (persistent volumes). */
  readonly ttlMs: number | null;
  readonly name: string;
  /** Extra user tags (never overriding runctl's own). */
  readonly extra?: Readonly<Record<string, string>> | undefined;
  readonly persistent?: boolean | undefined;
}

/**
 * The tags of one resource: the user's extra tags, then runctl's (which win on a clash).
 *
 * @example
 * ```ts
 * runctlTags({ runId: "r1", owner: "me@box", now: new Date(), ttlMs: 3600_000, name: "runctl-r1" });
 * ```
 */
export function runctlTags(input: RunctlTagInput): Record<string, string> {
  return {
    ...(input.extra ?? {}),
    [TAG.name]: input.name,
    [TAG.runId]: input.runId,
    [TAG.owner]: input.owner,
    [TAG.createdAt]: input.now.toISOString(),
    ...(input.ttlMs === null ? {} : { [TAG.expiresAt]: new Date(input.now.getTime() + input.ttlMs).toISOString() }),
    ...(input.persistent ? { [TAG.persistent]: "true" } : {}),
  };
}

/** Tags as the EC2 API wants them. */
export function toAwsTags(tags: Readonly<Record<string, string>>): { Key: string; Value: string }[] {
  return Object.entries(tags).map(([Key, Value]) => ({ Key, Value }));
}

/** EC2 tags back into a record (missing keys and values skipped). */
export function fromAwsTags(tags: readonly { Key?: string | undefined; Value?: string | undefined }[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const t of tags ?? []) if (t.Key !== undefined) out[t.Key] = t.Value ?? "";
  return out;
}
