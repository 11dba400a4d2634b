import { PassThrough } from "node:stream";
import { RunctlError, throwIfAborted } from "../errors/runctl-error.js";
import type { ExecHandle, ExecResult } from "../transport/types.js";
import { commandError, parseApplyReply, parseManifestJson, type AgentCall } from "./agent-sync-replies.js";
import type { RemoteFiles } from "./diff.js";
import { diffManifests } from "./diff.js";
import { HashCache } from "./hash-cache.js";
import { hashScanFiles, type LocalManifestEntry, type Manifest } from "./manifest.js";
import type { ScannedFile } from "./scan-tree.js";
import type { SyncAttempt } from "./sync-attempt.js";
import { isStreamClosed, packSyncTar, type PackEntry } from "./tar-pack.js";
import type { SyncResult } from "./sync-tree.js";

/**
 * A sync in ONE agent call over a two-way byte stream (SSH, a local process): `agent sync DIR` prints
 * the folder's manifest as its first line while the local files are hashed; the client compares and
 * then either closes stdin (a no-op: nothing else happens) or streams the tar of the differences on
 * the same call, which the agent applies and verifies, printing its reply as the second line. This
 * saves the second call's channel and interpreter start on every sync that sends something.
 *
 * @defaultValue no defaults
 * @example
 * ```ts
 * const result = await syncInOneCall({ options, scan, progress, result: summarize });
 * ```
 */
export async function syncInOneCall(attempt: SyncAttempt): Promise<SyncResult> {
  const { options, scan, progress } = attempt;
  const { transport, signal } = options;
  // -S: no site-packages; `sync` needs the standard library only, and site costs ~6 ms a start.
  const argv = [options.python, "-S", options.agentPath, "sync", options.remoteDir];
  const call: AgentCall = { argv, host: transport.host };
  // Our own controller: a failed hash or pack must stop the agent, not leave it waiting on stdin.
  const controller = new AbortController();
  const onOuterAbort = (): void => controller.abort(signal?.reason);
  signal?.addEventListener("abort", onOuterAbort, { once: true });
  const input = new PassThrough();
  const handle = transport.exec(argv, { stdin: input, signal: controller.signal });
  // Read before anything awaits the handle: awaiting first would drop the chunks it streams.
  const firstLine = readFirstLine(handle);
  const stop = async (): Promise<void> => {
    controller.abort();
    input.destroy();
    await Promise.resolve(handle).catch(() => {});
  };
  try {
    const cache = await HashCache.load(options.hashCachePath, scan.root);
    // Once the machine's manifest is in, a file it lacks (or has with another size) is sent whatever
    // its hash: it is hashed while it is packed, so it is read once (a first sync reads nothing twice:
    // no uncached file is read before the manifest is in).
    let remote: RemoteFiles | undefined;
    const defer = (file: ScannedFile): boolean => {
      if (remote === undefined) return false;
      const other = Object.hasOwn(remote, file.path) ? remote[file.path] : undefined;
      return other === undefined || other.size !== file.size;
    };
    const listing = firstLine.then((reply) => {
      if (reply !== undefined) remote = parseManifestJson(reply.line, call, { stdoutTail: reply.line.slice(-2000), stderrTail: "" });
      return remote;
    });
    const [hashed, listed] = await Promise.allSettled([
      // Uncached files wait for the listing: on a first sync the machine lacks them all, and reading
      // them before it is known would read them twice (here and while they are sent).
      hashScanFiles(scan, cache, { signal, defer, readyToRead: listing, onFileHashed: (done, total) => progress("hashing", done, total) }),
      listing,
    ]);
    if (hashed.status === "rejected" || listed.status === "rejected") await stop();
    throwIfAborted(signal);
    if (hashed.status === "rejected") throw hashed.reason;
    if (listed.status === "rejected") throw listed.reason;
    const remoteFiles = listed.value ?? (await noManifest(handle, call));
    const { manifest: hashedPart, deferred } = hashed.value;
    const entries: PackEntry[] = [...hashedPart.entries, ...deferred];
    entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    const manifestOf = (complete: readonly LocalManifestEntry[]): Manifest => {
      let totalBytes = 0;
      for (const e of complete) totalBytes += e.size;
      return { ...hashedPart, entries: complete, totalBytes };
    };
    progress("comparing");
    const diff = diffManifests(entries, remoteFiles);
    if (diff.upload.length === 0 && diff.delete.length === 0) {
      input.end(); // nothing to send: the agent answers and exits
      await cache.save();
      parseApplyReply(secondLine(await handle), call);
      progress("done");
      return attempt.result(manifestOf(hashedPart.entries), 0, 0, 0);
    }

    const tar = packSyncTar({
      root: scan.root,
      entries,
      upload: diff.upload,
      delete: diff.delete,
      signal: controller.signal,
      onFilePacked: (files, bytes) => progress("uploading", files, diff.upload.length, bytes, diff.uploadBytes),
      onFileHashed: (entry, startedAt) => cache.set(entry.path, entry, entry.sha256, startedAt),
    });
    tar.done.then(
      () => progress("applying"),
      () => controller.abort(),
    );
    // The tar comes in 256 KiB buffers: each is one write into the channel.
    tar.stream.pipe(input);
    const ran = Promise.resolve(handle).finally(() => {
      // The agent is gone: unblock a pack that waits for a reader (no-op once everything was read).
      tar.stream.destroy();
    });
    const [packed, result] = await Promise.allSettled([tar.done, ran]);
    throwIfAborted(signal);
    // A file that changed, an fs error or ABORTED explains more than the killed command it caused; a
    // stream closed by the agent's exit is explained by the agent's own reply.
    if (packed.status === "rejected" && !isStreamClosed(packed.reason)) throw packed.reason;
    if (result.status === "rejected") throw result.reason;
    await cache.save();
    const reply = parseApplyReply(secondLine(result.value), call);
    // The agent verified the folder against the full manifest, which packing completed.
    if (packed.status === "rejected") throw packed.reason;
    progress("done", diff.upload.length, diff.upload.length, diff.uploadBytes, diff.uploadBytes);
    return attempt.result(manifestOf(packed.value.entries), diff.upload.length, diff.uploadBytes, reply.deleted);
  } catch (error) {
    await stop(); // whatever failed, the agent must not wait on stdin
    throw error;
  } finally {
    signal?.removeEventListener("abort", onOuterAbort);
  }
}

/** The first stdout line of a running command (without its newline), or undefined when it ended before one. */
async function readFirstLine(handle: ExecHandle): Promise<{ line: string } | undefined> {
  const chunks: Buffer[] = [];
  for await (const chunk of handle) {
    if (chunk.stream !== "stdout") continue;
    const data = Buffer.from(chunk.data.buffer, chunk.data.byteOffset, chunk.data.byteLength);
    const newline = data.indexOf(0x0a);
    if (newline === -1) {
      chunks.push(data);
      continue;
    }
    chunks.push(data.subarray(0, newline));
    return { line: Buffer.concat(chunks).toString("utf8") };
  }
  return undefined;
}

/** The agent ended without printing its manifest: its exit explains why. */
async function noManifest(handle: ExecHandle, call: AgentCall): Promise<never> {
  const result = await handle;
  if (result.exitCode !== 0) throw commandError(result, call);
  throw new RunctlError("AGENT_FAILED", `The runctl agent on ${call.host} ended without printing the folder's manifest.`, {
    details: { host: call.host, stdoutTail: result.stdoutTail.slice(-2000), stderrTail: result.stderrTail.slice(-2000) },
  });
}

/** The result with stdout reduced to what follows the manifest line: the agent's reply. */
function secondLine(result: ExecResult): ExecResult {
  const newline = result.stdout.indexOf("\n");
  const reply = newline === -1 ? "" : result.stdout.slice(newline + 1);
  return { ...result, stdout: reply, stdoutTail: reply.slice(-65_536) };
}
