import { appendFileSync, closeSync, fsyncSync, mkdirSync, openSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { runctlHome } from "../util/runctl-home.js";

/** Kinds of cloud resources runctl creates and records. */
export type ResourceKind = "instance" | "volume" | "snapshot" | "key-pair" | "security-group" | "s3-prefix" | "job";

/** One resource runctl created, as kept in `$RUNCTL_HOME/resources.jsonl`. */
export interface ResourceRecord {
  /** What it is. */
  readonly kind: ResourceKind;
  /** The cloud's id (`i-…`, `vol-…`, `sg-…`, a key pair name, `s3://bucket/prefix/`). */
  readonly id: string;
  /** The provider that made it (`ec2`). */
  readonly provider: string;
  /** The region, for cloud resources. */
  readonly region?: string | undefined;
  /** The run it was made for; absent for resources made outside a run (a persistent volume). */
  readonly runId?: string | undefined;
  /** When it was created (ISO 8601). */
  readonly createdAt: string;
  /** When it may be swept (ISO 8601), from its `runctl:expires-at` tag. */
  readonly expiresAt?: string | undefined;
  /** Kept beyond its run (a persistent volume): never swept. */
  readonly persistent?: boolean | undefined;
  /** The tags it carries. */
  readonly tags: Readonly<Record<string, string>>;
  /** Set once runctl saw it deleted (ISO 8601). */
  readonly deletedAt?: string | undefined;
}

type LedgerLine = { readonly op: "created"; readonly r: ResourceRecord } | { readonly op: "deleted"; readonly kind: ResourceKind; readonly id: string; readonly at: string };

/** The ledger file: one JSON line per creation or deletion, appended and fsynced. */
export function resourceLedgerPath(): string {
  return join(runctlHome(), "resources.jsonl");
}

function append(line: LedgerLine): void {
  const path = resourceLedgerPath();
  mkdirSync(dirname(path), { recursive: true });
  // One write per line with O_APPEND: concurrent writers never interleave within a line.
  const fd = openSync(path, "a", 0o600);
  try {
    appendFileSync(fd, JSON.stringify(line) + "\n");
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Records a resource the moment the cloud has accepted its creation, before anything else can fail,
 * so a crash never leaves a resource runctl does not know about.
 *
 * @example
 * ```ts
 * recordResourceCreated({ kind: "instance", id: "i-0abc", provider: "ec2", region: "us-east-1", createdAt: new Date().toISOString(), tags });
 * ```
 */
export function recordResourceCreated(record: ResourceRecord): void {
  append({ op: "created", r: record });
}

/**
 * Records that a resource is gone (terminated, deleted).
 *
 * @example
 * ```ts
 * recordResourceDeleted("instance", "i-0abc");
 * ```
 */
export function recordResourceDeleted(kind: ResourceKind, id: string, at: Date = new Date()): void {
  append({ op: "deleted", kind, id, at: at.toISOString() });
}

/** Options of {@link listRecordedResources}. */
export interface ListRecordedResourcesOptions {
  /** Include resources already recorded as deleted. @defaultValue false */
  readonly includeDeleted?: boolean | undefined;
}

/**
 * Every resource in the ledger, newest state of each (a torn last line from a crash is skipped).
 *
 * @example
 * ```ts
 * for (const r of listRecordedResources()) console.log(r.kind, r.id, r.runId);
 * ```
 */
export function listRecordedResources(options: ListRecordedResourcesOptions = {}): ResourceRecord[] {
  let text: string;
  try {
    text = readFileSync(resourceLedgerPath(), "utf8");
  } catch {
    return [];
  }
  const byKey = new Map<string, ResourceRecord>();
  for (const raw of text.split("\n")) {
    if (raw.trim() === "") continue;
    let line: LedgerLine;
    try {
      line = JSON.parse(raw) as LedgerLine;
    } catch {
      continue;
    }
    if (line.op === "created") byKey.set(`${line.r.kind}\u0000${line.r.id}`, line.r);
    else {
      const key = `${line.kind}\u0000${line.id}`;
      const known = byKey.get(key);
      if (known) byKey.set(key, { ...known, deletedAt: line.at });
    }
  }
  const all = [...byKey.values()];
  return options.includeDeleted ? all : all.filter((r) => r.deletedAt === undefined);
}
