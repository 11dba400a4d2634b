/**
 * One SSH test host for a benchmark, set up the way bench/sync-vs-rsync.ts does it: its own testbed
 * (a network namespace running its own sshd, see test/testbed/), connected to only after checking
 * that the host's address routes through the testbed's own bridge, and torn down at the end (also on
 * Ctrl-C). Also the plain-ssh side of a comparison: the same key, known_hosts and strict host-key
 * checking, no user config.
 */
import { spawn } from "node:child_process";
import { createReadStream, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import type { RunPlan, SshHost, TrainOptions } from "runctl";
import { defaultStateDir } from "../test/testbed/global-setup.js";
import { startTestbed, type Testbed, type TestHost } from "../test/testbed/testbed.js";

/** A started test host and what a benchmark needs to reach it. */
export interface BenchHost {
  readonly testHost: TestHost;
  /** The host for `sshHosts(...)`. */
  readonly host: SshHost;
  /** Arguments for `ssh` that run `remoteCommand` on the host. */
  sshArgs(remoteCommand: string): string[];
  /** Copies a local file to `~/bench-peer/<name>` on the host (for the plain-ssh peer). */
  upload(localPath: string): Promise<string>;
  /** Stops the testbed and removes the temporary runctl home. */
  stop(): Promise<void>;
}

/**
 * The options of plain `ssh` to a test host, the peer side of every comparison: the host's key and
 * known_hosts, strict host-key checking, no user config, no prompts.
 */
export function plainSshOptions(h: TestHost): string[] {
  return ["-F", "/dev/null", "-i", h.privateKeyPath, "-o", "IdentitiesOnly=yes", "-o", `UserKnownHostsFile=${h.knownHostsPath}`, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", String(h.port)];
}

/** An untimed run that must succeed: agent install, code sync, interpreter and page cache. */
export async function warmUp(plan: RunPlan, script: string, options: TrainOptions = {}): Promise<void> {
  const run = plan.train(script, { cleanup: true, ...options });
  const result = await run;
  if (result.status !== "succeeded") throw new Error(`warm-up run ${run.runId} ended ${result.status}`);
}

/**
 * `reps` repetitions of runctl and its peer, who goes first alternating so that neither always meets
 * a warmer machine; `after` sees each repetition's pair.
 */
export async function alternate<A, B>(reps: number, runctl: () => Promise<A>, peer: () => Promise<B>, after: (rep: number, a: A, b: B) => void): Promise<{ runctl: A[]; peer: B[] }> {
  const a: A[] = [];
  const b: B[] = [];
  for (let rep = 0; rep < reps; rep++) {
    if (rep % 2 === 0) {
      a.push(await runctl());
      b.push(await peer());
    } else {
      b.push(await peer());
      a.push(await runctl());
    }
    after(rep, a[rep]!, b[rep]!);
  }
  return { runctl: a, peer: b };
}

/** Wall-clock time in ms with sub-millisecond precision (Date.now() is whole ms). */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Starts a one-host testbed and points RUNCTL_HOME at a temporary folder (runctl's local state stays
 * out of the user's). Ctrl-C stops everything.
 */
export async function startBenchHost(): Promise<BenchHost> {
  const runctlHome = mkdtempSync(join(tmpdir(), "runctl-bench-home-"));
  process.env["RUNCTL_HOME"] = runctlHome;
  let bed: Testbed | undefined;
  const stop = async (): Promise<void> => {
    await bed?.stop().catch(() => {});
    bed = undefined;
    rmSync(runctlHome, { recursive: true, force: true });
  };
  process.once("SIGINT", () => void stop().finally(() => process.exit(130)));
  try {
    bed = await startTestbed({ hosts: 1, stateDir: defaultStateDir() });
    const h = bed.hosts[0]!;
    await bed.assertSafe(h.address);
    const sshArgs = (remoteCommand: string): string[] => [...plainSshOptions(h), `${h.user}@${h.address}`, remoteCommand];
    const upload = async (localPath: string): Promise<string> => {
      const remote = `bench-peer/${basename(localPath)}`;
      await new Promise<void>((resolve, reject) => {
        const child = spawn("ssh", sshArgs(`mkdir -p bench-peer && cat > '${remote}'`), { stdio: ["pipe", "ignore", "pipe"] });
        let err = "";
        child.stderr.on("data", (d: Buffer) => (err += d.toString()));
        child.on("error", reject);
        child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`uploading ${localPath} failed (${code}): ${err.trim()}`))));
        createReadStream(localPath).pipe(child.stdin);
      });
      return remote;
    };
    return {
      testHost: h,
      host: { host: h.address, port: h.port, username: h.user, privateKeyPath: h.privateKeyPath, knownHostsPath: h.knownHostsPath },
      sshArgs,
      upload,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
