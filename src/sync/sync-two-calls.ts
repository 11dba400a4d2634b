import { randomUUID } from "node:crypto";
import { RunctlError, throwIfAborted } from "../errors/runctl-error.js";
import { machineSecretsOver } from "../transport/secrets-channel.js";
import type { ExecResult } from "../transport/types.js";
import { parseApplyReply, parseManifestReply } from "./agent-sync-replies.js";
import { diffManifests } from "./diff.js";
import { hashScan, type Manifest } from "./manifest.js";
import { withSignal, type SyncAttempt } from "./sync-attempt.js";
import { isStreamClosed, packSyncTar } from "./tar-pack.js";
import type { SyncResult } from "./sync-tree.js";

/**
 * A sync in two agent calls, for transports without a two-way byte stream (SSM, where output
 * arrives when a command ends) and for staged tars: `agent manifest DIR` while the local files are
 * hashed, then, when something differs, `agent sync-apply DIR` with the tar on stdin or staged in
 * storage. A no-op is the first call only.
 *
 * @defaultValue no defaults
 * @example
 * ```ts
 * const result = await syncInTwoCalls({ options, scan, progress, result: summarize });
 * ```
 */
export async function syncInTwoCalls(attempt: SyncAttempt): Promise<SyncResult> {
  const { options, scan, progress } = attempt;
  const { transport, signal } = options;
  // Hashing and the remote manifest do not depend on each other: overlap them.
  const manifestArgv = [options.python, options.agentPath, "manifest", options.remoteDir];
  const [hashed, listed] = await Promise.allSettled([
    hashScan(scan, { hashCachePath: options.hashCachePath, signal, onFileHashed: (done, total) => progress("hashing", done, total) }),
    Promise.resolve(transport.exec(manifestArgv, withSignal(signal))).then((reply) => parseManifestReply(reply, { argv: manifestArgv, host: transport.host })),
  ]);
  throwIfAborted(signal);
  if (hashed.status === "rejected") throw hashed.reason;
  if (listed.status === "rejected") throw listed.reason;
  const manifest: Manifest = hashed.value;
  progress("comparing");
  const diff = diffManifests(manifest.entries, listed.value);
  if (diff.upload.length === 0 && diff.delete.length === 0) {
    progress("done");
    return attempt.result(manifest, 0, 0, 0);
  }

  // Our own controller: a failed pack must stop the remote apply, not leave it waiting on stdin.
  const controller = new AbortController();
  const onOuterAbort = (): void => controller.abort(signal?.reason);
  signal?.addEventListener("abort", onOuterAbort, { once: true });
  try {
    const tar = packSyncTar({
      root: manifest.root,
      entries: manifest.entries,
      upload: diff.upload,
      delete: diff.delete,
      signal: controller.signal,
      onFilePacked: (files, bytes) => progress("uploading", files, diff.upload.length, bytes, diff.uploadBytes),
    });
    tar.done.then(
      () => progress("applying"),
      () => controller.abort(),
    );
    const staging = options.staging;
    const applyArgv = [options.python, options.agentPath, "sync-apply", options.remoteDir, ...(staging ? ["--staged"] : [])];
    let apply: Promise<ExecResult>;
    let stagedKey: string | undefined;
    if (staging) {
      // No byte stream to the machine (SSM): the tar goes through storage, the agent fetches it.
      const key = `${staging.prefix ?? "runctl-sync"}/${randomUUID()}.tar`;
      stagedKey = key;
      const descriptor = staging.storage.machineDescriptor?.({ sharesLocalFilesystem: false });
      if (!descriptor) throw new RunctlError("STORAGE_UNREACHABLE", `Sync staging: the machine cannot reach ${staging.storage.uri}.`);
      apply = staging.storage
        .put(key, tar.stream, withSignal(controller.signal))
        .then(async () => {
          // Over SSM the request itself is staged in S3: no credentials in it (the instance profile reads the tar).
          const secrets = await machineSecretsOver(staging.storage, transport.stdinLeavesCopy === true, "sync staging", withSignal(controller.signal));
          const request = JSON.stringify({ storage: descriptor, key, secrets: secrets ?? null });
          return transport.exec(applyArgv, { stdin: request, signal: controller.signal });
        })
        .finally(() => tar.stream.destroy());
    } else {
      apply = Promise.resolve(transport.exec(applyArgv, { stdin: tar.stream, signal: controller.signal })).finally(() => {
        // The agent is gone: unblock a pack that waits for a reader (no-op once everything was read).
        tar.stream.destroy();
      });
    }
    const [packed, ran] = await Promise.allSettled([tar.done, apply]);
    if (staging && stagedKey) await staging.storage.delete(stagedKey).catch(() => {});
    throwIfAborted(signal);
    // A file that changed, an fs error or ABORTED explains more than the killed command it caused; a
    // stream closed by the agent's exit is explained by the agent's own reply.
    if (packed.status === "rejected" && !isStreamClosed(packed.reason)) throw packed.reason;
    if (ran.status === "rejected") throw ran.reason;
    const reply = parseApplyReply(ran.value, { argv: applyArgv, host: transport.host });
    progress("done", diff.upload.length, diff.upload.length, diff.uploadBytes, diff.uploadBytes);
    return attempt.result(manifest, diff.upload.length, diff.uploadBytes, reply.deleted);
  } finally {
    signal?.removeEventListener("abort", onOuterAbort);
  }
}
