import { localOwner } from "../../util/owner.js";
import { randomUUID } from "node:crypto";
import type { Readable } from "node:stream";
import { RunctlError } from "../../errors/runctl-error.js";
import type { S3StorageDescriptor, Storage } from "../../storage/types.js";

import { STAGING_MARKER, STAGING_ROOT, stagingFolder } from "../../aws/staging-layout.js";

// The layout lives in aws/staging-layout.ts, shared with the sweeper that finds leaked folders.
export { STAGING_MARKER, STAGING_ROOT };

/**
 * The marker written into a staging folder before anything else is staged there, so a leak sweeper
 * can tell whose objects they are and when they may go.
 *
 * @example
 * ```ts
 * const m: StagingMarker = { "runctl:run-id": "r1", "runctl:owner": "me@laptop",
 *   "runctl:created-at": "2026-11-21T15:13:00.000Z", "runctl:expires-at": "2026-11-22T15:13:00.000Z" };
 * ```
 */
export interface StagingMarker {
  /** The run (or, without one, the instance id) the objects belong to. */
  readonly "runctl:run-id": string;
  /** `user@host` of the process that staged them. */
  readonly "runctl:owner": string;
  /** When the folder was first used (ISO 8601). */
  readonly "runctl:created-at": string;
  /** After this (ISO 8601) anything left in the folder is a leak and may be deleted. */
  readonly "runctl:expires-at": string;
}


/**
 * The staging folder of one SSM transport, `runctl-staging/<scope>/` in an S3 storage: stdin,
 * files in transit and command output live there briefly. The marker is written once, before the
 * first object; {@link SsmStaging.deleteAll} removes the folder (the marker last).
 *
 * @example
 * ```ts
 * const staging = new SsmStaging(s3("s3://bucket/runctl"), { scope: "r1", runId: "r1", owner: localOwner(), ttlMs: 86_400_000 });
 * const key = await staging.stage(".stdin", "hello");
 * await staging.delete([key]);
 * ```
 */
export class SsmStaging {
  /** How the machine reaches the bucket (bucket, prefix, endpoint, region). */
  readonly descriptor: S3StorageDescriptor;
  /** The folder, as a storage key prefix ending in `/`. */
  readonly folder: string;
  private marker: Promise<void> | undefined;

  constructor(
    readonly storage: Storage,
    private readonly facts: { readonly scope: string; readonly runId: string | undefined; readonly owner: string; readonly ttlMs: number },
  ) {
    const descriptor = storage.machineDescriptor?.({ sharesLocalFilesystem: false });
    if (!descriptor || descriptor.kind !== "s3") {
      throw new RunctlError("INVALID_ARGUMENT", `ssmTransport() staging must be an S3 storage (s3("s3://bucket/prefix")); ${storage.uri} is not reachable from an instance.`);
    }
    this.descriptor = descriptor;
    this.folder = stagingFolder(facts.scope);
  }

  /** A new key in the folder (`<folder><uuid><suffix>`). */
  newKey(suffix: string): string {
    return `${this.folder}${randomUUID()}${suffix}`;
  }

  /** The object's key in the bucket (the storage prefix prepended). */
  bucketKey(key: string): string {
    return this.descriptor.prefix === "" ? key : `${this.descriptor.prefix}/${key}`;
  }

  /** `s3://bucket/<bucket key>`. */
  s3Uri(key: string): string {
    return `s3://${this.descriptor.bucket}/${this.bucketKey(key)}`;
  }

  /** The bucket-level prefix SendCommand writes command output under (`OutputS3KeyPrefix`). */
  get outputKeyPrefix(): string {
    return this.bucketKey(`${this.folder}output`);
  }

  /**
   * The storage key where SSM puts one stream of a command's output: AWS's layout
   * `<prefix>/<commandId>/<instanceId>/awsrunShellScript/0.awsrunShellScript/<stream>`.
   */
  outputKey(commandId: string, instanceId: string, stream: "stdout" | "stderr"): string {
    return `${this.folder}output/${commandId}/${instanceId}/awsrunShellScript/0.awsrunShellScript/${stream}`;
  }

  /** Writes the marker unless this transport already did (retried on the next call after a failure). */
  ensureMarker(signal: AbortSignal | undefined): Promise<void> {
    if (!this.marker) {
      const now = Date.now();
      const marker: StagingMarker = {
        "runctl:run-id": this.facts.runId ?? this.facts.scope,
        "runctl:owner": this.facts.owner,
        "runctl:created-at": new Date(now).toISOString(),
        "runctl:expires-at": new Date(now + this.facts.ttlMs).toISOString(),
      };
      const writing = this.storage.put(`${this.folder}${STAGING_MARKER}`, JSON.stringify(marker), signal ? { signal } : {});
      this.marker = writing;
      writing.catch(() => {
        if (this.marker === writing) this.marker = undefined;
      });
    }
    return this.marker;
  }

  /** Uploads `body` (streamed for a Readable: bounded memory) to a new key ending in `suffix`. */
  async stage(suffix: string, body: string | Uint8Array | Readable, signal?: AbortSignal): Promise<string> {
    await this.ensureMarker(signal);
    const key = this.newKey(suffix);
    await this.storage.put(key, body, signal ? { signal } : {});
    return key;
  }

  /** Deletes staged objects; failures are ignored (the sweeper removes leaks after the marker expires). */
  async delete(keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return;
    await this.storage.delete(keys).catch(() => {});
  }

  /** Deletes every object in the folder, the marker last (so a half-done cleanup stays sweepable). */
  async deleteAll(signal?: AbortSignal): Promise<void> {
    const keys: string[] = [];
    for await (const o of this.storage.list(this.folder, signal ? { signal } : {})) keys.push(o.key);
    const marker = `${this.folder}${STAGING_MARKER}`;
    await this.storage.delete(
      keys.filter((k) => k !== marker),
      signal ? { signal } : {},
    );
    await this.storage.delete(marker, signal ? { signal } : {});
    this.marker = undefined;
  }
}
