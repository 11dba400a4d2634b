import type { Readable } from "node:stream";

/** What {@link Storage.stat} and {@link Storage.list} report about one object. */
export interface StorageObjectInfo {
  /** The object's key, relative to the storage root. */
  readonly key: string;
  /** Size in bytes. */
  readonly size: number;
  /** Last modification time, when the backend knows it. */
  readonly modifiedAt?: Date | undefined;
  /** The backend's content tag (S3 ETag), when there is one. */
  readonly etag?: string | undefined;
}

/** Options every storage call accepts. */
export interface StorageCallOptions {
  /** Aborts the call with ABORTED. */
  readonly signal?: AbortSignal | undefined;
}

/** A folder the machine can see. */
export interface DirStorageDescriptor {
  /** `dir`: a folder the machine can see. */
  readonly kind: "dir";
  /** The folder's absolute path on the machine. */
  readonly path: string;
}

/** An S3 bucket and prefix (docs/agent-protocol.md, "S3"). */
export interface S3StorageDescriptor {
  /** `s3`: a bucket the machine reaches over the S3 protocol. */
  readonly kind: "s3";
  /** Bucket name. */
  readonly bucket: string;
  /** Key prefix without leading or trailing `/` (`""` for the bucket root). */
  readonly prefix: string;
  /** Region, or null for the machine's default. */
  readonly region: string | null;
  /** Endpoint URL of an S3-protocol server, or null for AWS. */
  readonly endpoint: string | null;
  /** Address objects as `endpoint/bucket/key`. */
  readonly forcePathStyle: boolean;
  /** When request checksums are sent. */
  readonly checksums: "when_supported" | "when_required";
  /** Which client the agent uses: boto3 if importable else the aws CLI (`auto`), or one of them. */
  readonly backend: "auto" | "boto3" | "cli";
}

/**
 * How the agent on a machine reaches a storage: a folder it can see, or an S3 bucket.
 * Plain JSON without secrets; it is written into the machine's `spec.json`.
 */
export type StorageDescriptor = DirStorageDescriptor | S3StorageDescriptor;

/**
 * What `machineDir()`-style storages need of a connection to a machine: a structural subset of
 * `Transport` (src/transport/types.ts), declared here so that storage/ never imports transport/
 * (transport/ sits above storage/: SSM stages through a Storage). Every `Transport` is a `MachineShell`.
 */
export interface MachineShell {
  /** Runs an argv or a POSIX `sh` script; the handle is awaited for the result and iterated for output. */
  exec(
    command: readonly string[] | { readonly script: string },
    options?: { readonly signal?: AbortSignal | undefined; readonly stdin?: string | Uint8Array | Readable | undefined; readonly captureStdout?: boolean | undefined },
  ): PromiseLike<{ readonly exitCode: number | null; readonly stdout: string; readonly stderrTail: string }> & AsyncIterable<{ readonly stream: "stdout" | "stderr"; readonly data: Uint8Array }>;
  /** Frees the connection. */
  close(): Promise<void>;
}

/** Credentials handed to the agent in memory (never written on the machine). */
export interface MachineSecrets {
  /** AWS credentials for an `s3` storage. */
  readonly aws?: { readonly accessKeyId: string; readonly secretAccessKey: string; readonly sessionToken?: string | undefined } | undefined;
}

/**
 * Where checkpoints, data and run records live. Small and structural: implement it to add a backend.
 * Keys are relative POSIX paths (validated: no `..`, no absolute paths, no empty parts).
 *
 * @example
 * ```ts
 * const store: Storage = localDir("./ckpt");
 * await store.put("a/b.txt", "hello");
 * for await (const o of store.list("a/")) console.log(o.key, o.size);
 * ```
 */
export interface Storage {
  /** Where this storage points, as a URI (`file:///abs`, `s3://bucket/prefix`). */
  readonly uri: string;
  /** Writes an object atomically: readers see the old object or the whole new one. */
  put(key: string, body: string | Uint8Array | Readable, options?: StorageCallOptions): Promise<void>;
  /** Reads an object as a stream; NOT_FOUND when it does not exist. */
  get(key: string, options?: StorageCallOptions): Promise<Readable>;
  /**
   * Downloads an object into the local file `path`: readers of `path` see the old file (or none)
   * until the whole object is there (a temporary file beside it, then a rename); on any failure
   * nothing is left. NOT_FOUND when the object does not exist; a local write error (a full disk) is
   * STORAGE_ERROR naming `path`, with `details.errno`. Optional capability, for backends
   * that do better than streaming `get` to a file (S3: parallel ranges written at their offsets);
   * `downloadToFile()` uses it when present and streams `get` otherwise.
   */
  download?(key: string, path: string, options?: StorageCallOptions): Promise<StorageObjectInfo>;
  /** Facts about an object, or undefined when it does not exist. */
  stat(key: string, options?: StorageCallOptions): Promise<StorageObjectInfo | undefined>;
  /** Every object whose key starts with `prefix`, in no particular order. */
  list(prefix: string, options?: StorageCallOptions): AsyncIterable<StorageObjectInfo>;
  /** Deletes objects; missing ones are not an error. */
  delete(keys: string | readonly string[], options?: StorageCallOptions): Promise<void>;
  /**
   * How the agent on a machine reaches this storage, or undefined when it cannot (for example a
   * local folder seen from a remote host). A pure description of the storage's configuration (no
   * I/O): the plan calls it once, when `.train()` builds the run's spec. Optional capability.
   */
  machineDescriptor?(context: { readonly sharesLocalFilesystem: boolean }): StorageDescriptor | undefined;
  /**
   * Credentials the agent needs to reach this storage from the machine, resolved now (the machine
   * gets them in memory only). Undefined: the machine uses its own (an EC2 instance profile).
   * Optional capability.
   */
  machineSecrets?(options?: StorageCallOptions): Promise<MachineSecrets | undefined>;
  /**
   * Whether {@link Storage.machineSecrets} was asked for explicitly: `true` (always forward, so a
   * channel that stores its input, SSM, is refused with UNSUPPORTED), `false` (never), unset (forward
   * only over a channel that leaves no copy). Optional capability.
   */
  readonly forwardCredentials?: boolean | undefined;
}
