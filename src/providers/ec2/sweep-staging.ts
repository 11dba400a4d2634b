import type { Readable } from "node:stream";
import type { Storage } from "../../storage/types.js";

import { STAGING_MARKER, STAGING_ROOT } from "../../aws/staging-layout.js";

/** A marker is a few hundred bytes; anything much larger is not one. */
const MARKER_MAX_BYTES = 64 * 1024;

/**
 * One staging folder that has a readable marker.
 *
 * @example
 * ```ts
 * for (const f of await findStagingFolders(storage)) console.log(f.id);
 * ```
 */
export interface StagingFolder {
  readonly storage: Storage;
  /** `runctl-staging/<scope>/` (a key prefix in `storage`). */
  readonly prefix: string;
  /** `runctl-staging/<scope>/_runctl.json`. */
  readonly markerKey: string;
  /** The folder as a URI: `<storage uri>/runctl-staging/<scope>/`; the id in sweep reports. */
  readonly id: string;
  /** The marker's `runctl:*` string fields, read like tags. */
  readonly tags: Readonly<Record<string, string>>;
  /** The marker object's modification time, when the storage knows it. */
  readonly modifiedAt?: Date | undefined;
}

async function readSmall(stream: Readable, maxBytes: number): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
    size += b.length;
    if (size > maxBytes) {
      stream.destroy();
      return undefined;
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * Finds the staging folders of one storage: every `runctl-staging/<scope>/_runctl.json` marker
 * (one path part for `<scope>`), parsed. A folder without a marker, or with an unreadable one, is
 * not runctl's to judge and is left out (never touched).
 *
 * @example
 * ```ts
 * for (const f of await findStagingFolders(s3("s3://bucket/runctl"))) console.log(f.id, f.tags["runctl:run-id"]);
 * ```
 */
export async function findStagingFolders(storage: Storage, signal?: AbortSignal): Promise<StagingFolder[]> {
  const markers: { key: string; modifiedAt?: Date | undefined }[] = [];
  const opts = signal ? { signal } : {};
  for await (const o of storage.list(`${STAGING_ROOT}/`, opts)) {
    const parts = o.key.split("/");
    if (parts.length === 3 && parts[0] === STAGING_ROOT && parts[1] !== "" && parts[2] === STAGING_MARKER) markers.push({ key: o.key, modifiedAt: o.modifiedAt });
  }
  const base = storage.uri.replace(/\/+$/, "");
  const out: StagingFolder[] = [];
  for (const m of markers) {
    let text: string | undefined;
    try {
      text = await readSmall(await storage.get(m.key, opts), MARKER_MAX_BYTES);
    } catch (err) {
      if (signal?.aborted) throw err;
      continue; // gone since the listing, or unreadable: not judged
    }
    if (text === undefined) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      continue;
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) continue;
    const tags: Record<string, string> = {};
    for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) if (k.startsWith("runctl:") && typeof v === "string") tags[k] = v;
    const prefix = m.key.slice(0, m.key.length - STAGING_MARKER.length);
    out.push({ storage, prefix, markerKey: m.key, id: `${base}/${prefix}`, tags, ...(m.modifiedAt ? { modifiedAt: m.modifiedAt } : {}) });
  }
  return out;
}

/**
 * Deletes everything under a staging folder, the marker last, so an interrupted deletion leaves a
 * marker for the next sweep to find. Returns how many objects it deleted.
 *
 * @example
 * ```ts
 * await deleteStagingFolder(folder);
 * ```
 */
export async function deleteStagingFolder(folder: StagingFolder, signal?: AbortSignal): Promise<number> {
  const opts = signal ? { signal } : {};
  const keys: string[] = [];
  for await (const o of folder.storage.list(folder.prefix, opts)) if (o.key !== folder.markerKey) keys.push(o.key);
  for (let i = 0; i < keys.length; i += 1000) await folder.storage.delete(keys.slice(i, i + 1000), opts);
  await folder.storage.delete(folder.markerKey, opts);
  return keys.length + 1;
}
