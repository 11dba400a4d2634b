import type { Readable } from "node:stream";
import type { S3StorageDescriptor, Storage, StorageCallOptions, StorageObjectInfo, MachineSecrets } from "../types.js";
import { parseS3Uri } from "./s3-uri.js";
import type { S3Storage } from "./s3-storage.js";

/**
 * S3 storages the core makes from plain data (an `s3://` string in `.data()`/`.outputs()`, a saved
 * run's descriptor), without loading the AWS SDK: the root entry `runctl` must stay light, so the
 * real {@link S3Storage} (./s3-storage.ts, which imports `@aws-sdk/client-s3`) is loaded with a
 * dynamic `import()` on the first call that talks to S3. The URI is validated at once; the machine
 * descriptor is known without the SDK. Behaves as `s3(uri)` / `s3FromDescriptor(descriptor)`.
 */
export interface LazyS3Storage extends Storage {
  /** The bucket. */
  readonly bucket: string;
  /** The key prefix without leading or trailing `/`. */
  readonly prefix: string;
  /** Writes an object to a local file as parallel ranged GETs (loads the SDK); see {@link Storage.download}. */
  download(key: string, path: string, options?: StorageCallOptions): Promise<StorageObjectInfo>;
  /** How agents on machines reach this bucket. */
  machineDescriptor(context?: { readonly sharesLocalFilesystem: boolean }): S3StorageDescriptor;
  /** The client's credentials for the agent on a machine (loads the SDK). */
  machineSecrets(options?: StorageCallOptions): Promise<MachineSecrets | undefined>;
  /** The real storage, loading the AWS SDK on first use. */
  load(): Promise<S3Storage>;
}

function lazyStorage(uri: string, descriptor: S3StorageDescriptor, make: (module: typeof import("./s3-storage.js")) => S3Storage): LazyS3Storage {
  let loading: Promise<S3Storage> | undefined;
  const load = (): Promise<S3Storage> => (loading ??= import("./s3-storage.js").then(make));
  return {
    uri,
    bucket: descriptor.bucket,
    prefix: descriptor.prefix,
    forwardCredentials: undefined,
    load,
    async put(key: string, body: string | Uint8Array | Readable, options?: StorageCallOptions): Promise<void> {
      return (await load()).put(key, body, options);
    },
    async get(key: string, options?: StorageCallOptions): Promise<Readable> {
      return (await load()).get(key, options);
    },
    async download(key: string, path: string, options?: StorageCallOptions): Promise<StorageObjectInfo> {
      return (await load()).download(key, path, options);
    },
    async stat(key: string, options?: StorageCallOptions): Promise<StorageObjectInfo | undefined> {
      return (await load()).stat(key, options);
    },
    async *list(prefix: string, options?: StorageCallOptions): AsyncIterable<StorageObjectInfo> {
      yield* (await load()).list(prefix, options);
    },
    async delete(keys: string | readonly string[], options?: StorageCallOptions): Promise<void> {
      return (await load()).delete(keys, options);
    },
    machineDescriptor(): S3StorageDescriptor {
      return descriptor;
    },
    async machineSecrets(options?: StorageCallOptions): Promise<MachineSecrets | undefined> {
      return (await load()).machineSecrets(options);
    },
  };
}

/**
 * `s3(uri)` with default options, loading the AWS SDK only when S3 is first called.
 *
 * @example
 * ```ts
 * const data = lazyS3("s3://my-bucket/mnist"); // INVALID_URI at once for a bad URI; no SDK loaded yet
 * ```
 */
export function lazyS3(uri: string): LazyS3Storage {
  const location = parseS3Uri(uri);
  const descriptor: S3StorageDescriptor = {
    kind: "s3",
    bucket: location.bucket,
    prefix: location.prefix,
    region: null,
    endpoint: null,
    forcePathStyle: false,
    checksums: "when_supported",
    backend: "auto",
  };
  return lazyStorage(location.uri, descriptor, (m) => m.s3(uri));
}

/**
 * `s3FromDescriptor(descriptor)` (a storage saved in a run's record), loading the AWS SDK only when
 * S3 is first called.
 *
 * @example
 * ```ts
 * const store = lazyS3FromDescriptor(record.storage);
 * ```
 */
export function lazyS3FromDescriptor(descriptor: S3StorageDescriptor): LazyS3Storage {
  const uri = descriptor.prefix ? `s3://${descriptor.bucket}/${descriptor.prefix}` : `s3://${descriptor.bucket}`;
  const location = parseS3Uri(uri);
  const normalized: S3StorageDescriptor = {
    ...descriptor,
    bucket: location.bucket,
    prefix: location.prefix,
    region: descriptor.region || null,
    endpoint: descriptor.endpoint ? descriptor.endpoint.replace(/\/+$/, "") : null,
  };
  return lazyStorage(location.uri, normalized, (m) => m.s3FromDescriptor(descriptor));
}
