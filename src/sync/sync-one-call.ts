import { PassThrough } from "node:stream";
import { RunctlError, throwIfAborted } from "../errors/runctl-error.js";
import type { ExecHandle, ExecResult } from "../transport/types.js";
import { commandError, parseApplyReply, parseManifestJson, type AgentCall } from "./agent-sync-replies.js";
import type { RemoteFiles } from "./diff.js";
import { diffManifests } from "./diff.js";
import { hashScan, type Manifest } from "./manifest.js";
import type { SyncAttempt } from "./sync-attempt.js";
import { isStreamClosed, packSyncTar } from "./tar-pack.js";
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
    const [hashed, listed] = await Promise.allSettled([
      hashScan(scan, { hashCachePath: options.hashCachePath, signal, onFileHashed: (done, total) => progress("hashing", done, total) }),
      firstLine,
    ]);
    if (hashed.status === "rejected" || listed.status === "rejected") await stop();
    throwIfAborted(signal);
    if (hashed.status === "rejected") throw hashed.reason;
    if (listed.status === "rejected") throw listed.reason;
    const remote = listed.value ?? (await noManifest(handle, call));
    const manifest: Manifest = hashed.value;
    progress("comparing");
    const diff = diffManifests(manifest.entries, parseManifestJson(remote.line, call, { stdoutTail: remote.line.slice(-2000), stderrTail: "" }));
    if (diff.upload.length === 0 && diff.delete.length === 0) {
      input.end(); // nothing to send: the agent answers and exits
      parseApplyReply(secondLine(await handle), call);
      progress("done");
      return attempt.result(manifest, 0, 0, 0);
    }

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
    const reply = parseApplyReply(secondLine(result.value), call);
    progress("done", diff.upload.length, diff.upload.length, diff.uploadBytes, diff.uploadBytes);
    return attempt.result(manifest, diff.upload.length, diff.uploadBytes, reply.deleted);
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
