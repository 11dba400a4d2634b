import { Readable } from "node:stream";
import { RunctlError, throwIfAborted } from "../../errors/runctl-error.js";
import { shellQuote } from "../../util/shell-quote.js";
import { validateStorageKey } from "../storage-key.js";
import type { MachineShell, Storage, StorageCallOptions, StorageDescriptor, StorageObjectInfo } from "../types.js";

/**
 * Storage in a folder on a machine, reached through its transport: where checkpoints go when a
 * remote machine has no storage configured. Each call opens a transport from `connect` and closes
 * it, so a handle that outlives the run (`run.checkpoints()` after the host went back to its pool)
 * still works and holds no connection open.
 *
 * @param connect - Opens a connection to the machine (a {@link MachineShell}; any `Transport` is one).
 * @param root - Absolute folder on the machine.
 * @param label - How the machine is named in the URI (`ssh://user@host:22`).
 * @example
 * ```ts
 * const store = machineDir(() => sshTransport({ host: "gpu-1" }), "/home/ml/.runctl/checkpoints", "ssh://gpu-1:22");
 * ```
 */
export function machineDir(connect: () => MachineShell, root: string, label: string): Storage {
  if (!root.startsWith("/")) throw new RunctlError("INVALID_ARGUMENT", `machineDir(): ${root} is not an absolute path.`);
  const at = (key: string): string => `${root}/${validateStorageKey(key)}`;

  const run = async <T>(script: string, options: StorageCallOptions | undefined, use: (r: { exitCode: number | null; stdout: string; stderrTail: string }) => T, stdin?: string | Uint8Array | Readable): Promise<T> => {
    throwIfAborted(options?.signal);
    const transport = connect();
    try {
      const r = await transport.exec({ script }, { signal: options?.signal, stdin });
      return use(r);
    } finally {
      await transport.close().catch(() => {});
    }
  };
  const fail = (what: string, r: { exitCode: number | null; stderrTail: string }): never => {
    throw new RunctlError("STORAGE_ERROR", `${label}: ${what} failed (exit ${r.exitCode}): ${r.stderrTail.trim()}`, { retryable: true });
  };

  const storage: Storage = {
    uri: `${label}${root}`,
    async put(key, body, options) {
      const p = shellQuote(at(key));
      await run(`mkdir -p "$(dirname ${p})" && cat > ${p}.tmp.$$ && mv -f ${p}.tmp.$$ ${p}`, options, (r) => (r.exitCode === 0 ? undefined : fail(`write ${key}`, r)), body);
    },
    async stat(key, options): Promise<StorageObjectInfo | undefined> {
      return run(`stat -c '%s %Y' ${shellQuote(at(key))} 2>/dev/null || exit 44`, options, (r) => {
        if (r.exitCode === 44) return undefined;
        if (r.exitCode !== 0) return fail(`stat ${key}`, r);
        const [size, mtime] = r.stdout.trim().split(" ").map(Number);
        return { key, size: size ?? 0, modifiedAt: new Date((mtime ?? 0) * 1000) };
      });
    },
    async get(key, options) {
      if (!(await storage.stat(key, options))) throw new RunctlError("NOT_FOUND", `No object ${key} in ${storage.uri}.`);
      const transport = connect();
      const handle = transport.exec(["cat", at(key)], { captureStdout: false, signal: options?.signal });
      async function* bytes(): AsyncGenerator<Buffer> {
        try {
          for await (const chunk of handle) if (chunk.stream === "stdout") yield Buffer.from(chunk.data);
          const r = await handle;
          if (r.exitCode !== 0) fail(`read ${key}`, r);
        } finally {
          await transport.close().catch(() => {});
        }
      }
      return Readable.from(bytes());
    },
    async *list(prefix, options) {
      validateStorageKey(prefix, { allowPrefix: true });
      const slash = prefix.lastIndexOf("/");
      const base = slash === -1 ? root : `${root}/${prefix.slice(0, slash)}`;
      const objects = await run(`test -d ${shellQuote(base)} || exit 0; find ${shellQuote(base)} -type f -printf '%s %T@ %P\\0'`, options, (r) => {
        if (r.exitCode !== 0) return fail(`list ${prefix}`, r);
        const rel = base === root ? "" : `${base.slice(root.length + 1)}/`;
        return r.stdout
          .split("\0")
          .filter((line) => line !== "")
          .map((line) => {
            const [size, mtime, ...rest] = line.split(" ");
            return { key: rel + rest.join(" "), size: Number(size), modifiedAt: new Date(Number(mtime) * 1000) };
          })
          .filter((o) => o.key.startsWith(prefix) && !/\.tmp\.\d+$/.test(o.key));
      });
      yield* objects;
    },
    async delete(keys, options) {
      const list = typeof keys === "string" ? [keys] : [...keys];
      if (list.length === 0) return;
      await run(`rm -f -- ${list.map((k) => shellQuote(at(k))).join(" ")}`, options, (r) => (r.exitCode === 0 ? undefined : fail("delete", r)));
    },
    machineDescriptor(): StorageDescriptor {
      return { kind: "dir", path: root };
    },
  };
  return storage;
}
