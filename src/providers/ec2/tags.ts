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
  readonly extra?: Readonly<Record<string, string>>;
  readonly persistent?: boolean;
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
