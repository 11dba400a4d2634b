/**
 * Working through faults on an SSH machine: a sync that dies with the host is a typed, retryable
 * error (never a half-done "success"), retrying it converges to the verified tree, and a run that
 * loses its network for a while keeps training on the host while the client reconnects and resumes
 * the log exactly where it stopped.
 *
 *   RUNCTL_SSH_HOST=ml@10.0.0.5 RUNCTL_SSH_KEY=~/.ssh/id_ed25519 npx tsx examples/ssh-faults.ts
 *
 * Standalone it syncs ./training with retries, checks every file's sha256 on the host, then trains
 * for ~15 s: pull the network cable (or `sudo ip link set eth0 down` for a few seconds) meanwhile and
 * watch the run reconnect without losing a line. The host key must be in ~/.ssh/known_hosts (or
 * RUNCTL_SSH_KNOWN_HOSTS).
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readdir } from "node:fs/promises";
import { dirname, join, posix, relative, resolve, sep } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Runctl, isRunctlError, sshHosts, type ProvisionedMachine, type RunEvent, type RunResult, type SshHost } from "runctl";
import { sshHostsFromEnv } from "./ssh-env.js";

const here = dirname(fileURLToPath(import.meta.url));

/** What {@link ProvisionedMachine.sync} resolves to. */
export type SyncOutcome = Awaited<ReturnType<ProvisionedMachine["sync"]>>;

/** The host's copy compared with the local tree, file by file. */
export interface HostVerification {
  /** Every local file is on the host with the same sha256, and the host has no other file. */
  readonly ok: boolean;
  /** Files compared (local). */
  readonly files: number;
  /** What differs, e.g. `"missing: a/b.bin"`, `"sha256 differs: c.bin"`, `"extra on host: .x.tmp-1"`. */
  readonly mismatches: readonly string[];
}

/** Connects to the host (host key verified against known_hosts) and hands it over to drive yourself. */
export function connect(host: SshHost): Promise<ProvisionedMachine> {
  return Runctl.instance(sshHosts(host)).provision();
}

/** runctl's default sync excludes (folders anywhere, and file patterns); .gitignore files are not read here. */
const DEFAULT_EXCLUDED_DIRS = new Set([".git", "node_modules", "__pycache__", ".venv"]);
const isDefaultExcluded = (rel: string): boolean => rel.split("/").some((part) => DEFAULT_EXCLUDED_DIRS.has(part)) || rel.endsWith(".pyc") || rel.endsWith("/.DS_Store") || rel === ".DS_Store";

/** sha256 of every regular file below `dir` (minus runctl's default excludes), keyed by posix relative path. */
export async function localHashes(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  await Promise.all(
    entries
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name))
      .filter((full) => !isDefaultExcluded(relative(dir, full).split(sep).join("/")))
      .map(async (full) => {
        const hash = createHash("sha256");
        for await (const chunk of createReadStream(full)) hash.update(chunk as Buffer);
        out.set(relative(dir, full).split(sep).join("/"), hash.digest("hex"));
      }),
  );
  return out;
}

const HASH_TREE_PY = `
import hashlib, json, os, sys
root = sys.argv[1]
out = {}
for d, _, names in os.walk(root):
    for n in names:
        p = os.path.join(d, n)
        if os.path.isfile(p) and not os.path.islink(p):
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for b in iter(lambda: f.read(1 << 20), b""):
                    h.update(b)
            out[os.path.relpath(p, root).replace(os.sep, "/")] = h.hexdigest()
print(json.dumps(out))
`;

/**
 * Reads every file of `remoteDir` back on the host (sha256, computed there) and compares it with
 * `localDir`. Meant for trees that use no ignore rules beyond runctl's defaults (`.git`,
 * `node_modules`, `__pycache__`, `.venv`, `*.pyc`, `.DS_Store`).
 */
export async function verifyOnHost(machine: ProvisionedMachine, localDir: string, remoteDir: string): Promise<HostVerification> {
  const [local, reply] = await Promise.all([localHashes(localDir), machine.exec([machine.python, "-c", HASH_TREE_PY, remoteDir])]);
  if (reply.exitCode !== 0) throw new Error(`hashing ${remoteDir} on ${machine.address} failed: ${reply.stderrTail}`);
  const remote = new Map(Object.entries(JSON.parse(reply.stdout) as Record<string, string>));
  const mismatches: string[] = [];
  for (const [path, sha] of local) {
    const got = remote.get(path);
    if (got === undefined) mismatches.push(`missing: ${path}`);
    else if (got !== sha) mismatches.push(`sha256 differs: ${path}`);
  }
  for (const path of remote.keys()) if (!local.has(path)) mismatches.push(`extra on host: ${path}`);
  return { ok: mismatches.length === 0, files: local.size, mismatches };
}

/** Syncs `localDir` to `remoteDir` (one attempt, failing with a typed RunctlError) and checks the result on the host. */
export async function syncAndVerify(
  machine: ProvisionedMachine,
  localDir: string,
  remoteDir: string,
  options: { readonly signal?: AbortSignal } = {},
): Promise<{ readonly sync: SyncOutcome; readonly verified: HostVerification }> {
  const sync = await machine.sync(localDir, remoteDir, options.signal ? { signal: options.signal } : {});
  return { sync, verified: await verifyOnHost(machine, localDir, remoteDir) };
}

/**
 * The retry loop to put around a sync on an unreliable host: a retryable RunctlError (dropped
 * connection, host unreachable) waits and tries again; anything else is thrown at once. Each attempt
 * compares manifests again, so it sends only what is still missing.
 */
export async function syncWithRetry(
  machine: ProvisionedMachine,
  localDir: string,
  remoteDir: string,
  options: { readonly attempts?: number; readonly delayMs?: number; readonly onRetry?: (error: Error, attempt: number) => void } = {},
): Promise<{ readonly sync: SyncOutcome; readonly verified: HostVerification; readonly attempts: number }> {
  const attempts = options.attempts ?? 5;
  for (let attempt = 1; ; attempt++) {
    try {
      return { ...(await syncAndVerify(machine, localDir, remoteDir)), attempts: attempt };
    } catch (err) {
      if (!isRunctlError(err) || !err.retryable || attempt >= attempts) throw err;
      options.onRetry?.(err, attempt);
      await sleep((options.delayMs ?? 2_000) * attempt);
    }
  }
}

/** What {@link trainThroughFaults} saw. */
export interface FaultRunReport {
  readonly result: RunResult;
  /** Every event, in order. */
  readonly events: readonly RunEvent[];
  /** Every log line, in order. */
  readonly lines: readonly string[];
  /** `step` of every metric event, in order. */
  readonly metricSteps: readonly number[];
  /** The RECONNECTING warnings (the connection dropped and was reopened; the run went on). */
  readonly reconnects: readonly string[];
}

/**
 * Trains the example model on the host for about `steps × sleepPerStep` seconds and reports what the
 * client saw. Connection drops are survived: the client retries, then resumes the log at its byte offset.
 */
export async function trainThroughFaults(
  host: SshHost,
  options: { readonly steps?: number; readonly sleepPerStep?: number; readonly onEvent?: (event: RunEvent) => void; readonly verbose?: boolean } = {},
): Promise<FaultRunReport> {
  const say = options.verbose === false ? () => {} : (line: string) => console.log(line);
  const run = Runctl.instance(sshHosts(host))
    .sync(join(here, "..", "test", "fixtures", "trainers"))
    .train("train_mnist_e2e.py", {
      hyperparams: { lr: 0.5, steps: options.steps ?? 60, "sleep-per-step": options.sleepPerStep ?? 0.25, "checkpoint-every": 0 },
      cleanup: true,
    });
  const events: RunEvent[] = [];
  const lines: string[] = [];
  const metricSteps: number[] = [];
  const reconnects: string[] = [];
  for await (const event of run) {
    events.push(event);
    options.onEvent?.(event);
    if (event.type === "log") lines.push(event.line);
    if (event.type === "metric" && event.step !== undefined) {
      metricSteps.push(event.step);
      if (event.step % 10 === 0) say(`  step ${event.step}`);
    }
    if (event.type === "phase") say(`• ${event.phase}`);
    if (event.type === "warning" && event.code === "RECONNECTING") {
      reconnects.push(event.message);
      say(`  ${event.message}`);
    }
  }
  const result = await run;
  say(`${result.status} (exit ${result.exitCode}) after ${reconnects.length} reconnect(s), ${metricSteps.length} metric lines`);
  return { result, events, lines, metricSteps, reconnects };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const [host] = sshHostsFromEnv();
  if (!host) {
    console.error("set RUNCTL_SSH_HOST=user@host[:port] (and RUNCTL_SSH_KEY, RUNCTL_SSH_KNOWN_HOSTS if needed)");
    process.exit(2);
  }
  const main = async (): Promise<number> => {
    const machine = await connect(host);
    try {
      const remoteDir = posix.join(machine.rootDir, "work", "ssh-faults-example");
      const { sync, verified, attempts } = await syncWithRetry(machine, join(here, "..", "training"), remoteDir, {
        onRetry: (err, attempt) => console.log(`  sync attempt ${attempt} failed (${isRunctlError(err) ? err.code : "error"}); retrying`),
      });
      console.log(`synced ${sync.files} files (${sync.uploadedFiles} sent) in ${attempts} attempt(s); sha256 on the host ${verified.ok ? "verified" : `DIFFERS: ${verified.mismatches.join(", ")}`}`);
      if (!verified.ok) return 1;
    } finally {
      await machine.release();
    }
    const { result } = await trainThroughFaults(host);
    return result.status === "succeeded" ? 0 : 1;
  };
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(isRunctlError(err) ? `${err.code}: ${err.message}` : err);
      process.exit(1);
    },
  );
}
