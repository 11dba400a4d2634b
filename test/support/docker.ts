/**
 * Private Docker daemons for the container tests: never the system daemon, never a NAT bridge.
 *
 * Each {@link startDockerd} call starts its own dockerd (`--iptables=false --ip-forward=false
 * --ip-masq=false --bridge=none`, own socket, data root, exec root, pid file and an empty config file)
 * in a folder under /var/tmp/runctl-docker (outside /tmp, which test hosts have private; short, because
 * containerd's socket lives below it). Every daemon has its own data root: two dockerds must never
 * share one; the image comes from a cached tarball instead (container-image.ts, 2-4 s a daemon).
 *
 * - On a test host, dockerd runs inside the host's net, mount, UTS and PID namespaces (nsenter into
 *   its sshd), after the host's cgroups are mounted: `--network host` containers see only the host's
 *   address and hostname, `-v` bind mounts see the host's mount namespace (its private /tmp, loop
 *   volumes mounted there), and killing the host (TestHost.kill) kills the daemon and its containers
 *   like a machine crash. The socket is `root:<host user's group> 0660`, so the host's SSH user can
 *   use it (`DOCKER_HOST=<daemon.host>`), and nobody else.
 * - "local" runs in this machine's PID namespace and in a mount namespace of its own, a slave copy of
 *   this machine's taken at start: `-v` sees this machine's files, but a mount made here after the
 *   daemon started is not seen (this machine's / is private); mount loop volumes first. By default it
 *   also gets a fresh, empty network namespace (only `lo`), so even a `--network host` container
 *   reaches nothing. With `network: "root"` it shares this machine's network: then tests must use
 *   only `--network none` containers (network safety: a host-network container could reach outside
 *   this machine).
 *
 * The client: the test infrastructure runs /usr/bin/docker (Debian's docker.io, the daemon's own
 * version) when present; the product code and tests over SSH run whatever `docker` is on PATH (on this
 * dev machine /usr/local/bin/docker 28.x, which talks to the 20.10 daemon by API downgrade).
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { processAlive, processStartTime, sh, sleep, type ShResult } from "../testbed/sys.js";
import { ensureCgroupMounts, hostInitPid, nsenterPrefix, unmountUnder, type MachineTarget } from "./host-namespaces.js";

/** Folder holding one sub-folder per test daemon. */
export const DOCKER_STATE_ROOT = "/var/tmp/runctl-docker";

/** The docker client the test infrastructure runs: Debian's /usr/bin/docker when present. */
export function dockerCli(): string {
  return existsSync("/usr/bin/docker") ? "/usr/bin/docker" : "docker";
}

/** Runs the docker client against `dockerHost` (`unix:///…`) from this machine; non-zero exits are returned. */
export function runDocker(dockerHost: string, args: readonly string[], options: { readonly timeoutMs?: number; readonly input?: string } = {}): Promise<ShResult> {
  return sh(dockerCli(), ["-H", dockerHost, ...args], { allowFail: true, timeoutMs: options.timeoutMs ?? 120_000, ...(options.input !== undefined ? { input: options.input } : {}) });
}

/** A running private dockerd. */
export interface DockerDaemon {
  /** The `DOCKER_HOST` value, `unix:///var/tmp/runctl-docker/<id>/docker.sock`. */
  readonly host: string;
  /** The socket's path (same path inside a test host and here). */
  readonly socketPath: string;
  readonly target: MachineTarget;
  /** The daemon's folder (data root, exec root, pid file, log). */
  readonly stateDir: string;
  /** dockerd's log file, for failure messages. */
  readonly logPath: string;
  /** dockerd's pid in this machine's pid namespace. */
  readonly pid: number;
  /** The docker client against this daemon, run here as root; non-zero exits are returned. */
  docker(args: readonly string[], options?: { readonly timeoutMs?: number }): Promise<ShResult>;
  /**
   * Removes every container, stops dockerd (SIGTERM, then SIGKILL after 15 s), kills what it left,
   * unmounts and deletes its folder. Idempotent; fine after the test host was killed.
   */
  stop(): Promise<void>;
}

/** Options of {@link startDockerd}. */
export interface StartDockerdOptions {
  /**
   * "local" only: `"isolated"` (default) gives dockerd a fresh network namespace with only `lo`;
   * `"root"` shares this machine's network (then use `--network none` containers only).
   */
  readonly network?: "isolated" | "root";
  /** "local" only: group owning the socket (mode 0660). @defaultValue "root" */
  readonly socketGroup?: string;
  /** How long to wait for the daemon to answer. @defaultValue 60000 */
  readonly readyTimeoutMs?: number;
}

interface OwnerRecord {
  readonly ownerPid: number;
  readonly ownerStart: string;
  readonly dockerdPid: number;
  readonly dockerdStart: string;
  /** sshd pid of the test host it runs in, if any. */
  readonly hostPid?: number;
}

/**
 * Starts a private dockerd on `target` (a leased test host, or "local"); ready in about a second.
 * Needs root and the docker.io package. Call `stop()` in afterAll.
 *
 * @example
 * ```ts
 * const daemon = await startDockerd(host);           // host: a leased TestHost
 * const image = await ensureTestImage(daemon.host);  // "runctl-test/python:3"
 * await ssh.exec(["docker", "run", "--rm", "--network", "host", image, "python3", "-V"], { env: { DOCKER_HOST: daemon.host } });
 * await daemon.stop();
 * ```
 */
export async function startDockerd(target: MachineTarget, options: StartDockerdOptions = {}): Promise<DockerDaemon> {
  await sweepStaleDaemons();
  let hostPid: number | undefined;
  let group = options.socketGroup ?? "root";
  if (target !== "local") {
    hostPid = await hostInitPid(target);
    await ensureCgroupMounts(target);
    group = (await sh("id", ["-gn", target.user])).stdout.trim();
  }
  const label = target === "local" ? "local" : target.name;
  const id = `${label}-${randomBytes(3).toString("hex")}`;
  const dir = join(DOCKER_STATE_ROOT, id);
  mkdirSync(DOCKER_STATE_ROOT, { recursive: true, mode: 0o755 });
  mkdirSync(dir, { mode: 0o755 });
  const socketPath = join(dir, "docker.sock");
  const logPath = join(dir, "dockerd.log");
  writeFileSync(join(dir, "daemon.json"), "{}\n"); // not /etc/docker/daemon.json: nothing system-wide applies
  const dockerd = [
    "dockerd",
    "--iptables=false",
    "--ip-forward=false",
    "--ip-masq=false",
    "--bridge=none",
    `--host=unix://${socketPath}`,
    `--group=${group}`,
    `--data-root=${join(dir, "data")}`,
    `--exec-root=${join(dir, "exec")}`,
    `--pidfile=${join(dir, "dockerd.pid")}`,
    `--config-file=${join(dir, "daemon.json")}`,
  ];
  let argv: string[];
  if (hostPid !== undefined) argv = [...nsenterPrefix(hostPid, "all"), ...dockerd];
  // Its own mount namespace (a slave of this one): its mounts (the data root's self-bind, container
  // layers) never show here, so a test host started meanwhile cannot inherit copies of them.
  else if ((options.network ?? "isolated") === "isolated") argv = ["unshare", "--mount", "--propagation", "slave", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", ...dockerd];
  else argv = ["unshare", "--mount", "--propagation", "slave", "--", ...dockerd];

  const out = openSync(logPath, "a");
  let launcherPid: number;
  try {
    const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ["ignore", out, out] });
    child.on("error", () => {});
    child.unref();
    if (child.pid === undefined) throw new Error(`Could not spawn ${argv[0]}.`);
    launcherPid = child.pid;
  } finally {
    closeSync(out);
  }
  const logTail = (): string => (existsSync(logPath) ? readFileSync(logPath, "utf8").slice(-3000) : "");
  // nsenter forks to enter the PID namespace: dockerd is its child. unshare and sh exec in place.
  const pid = hostPid !== undefined ? await childOf(launcherPid, 10_000) : launcherPid;
  if (pid === undefined) {
    const tail = logTail();
    killMentioning(dir);
    await cleanupFolder(dir, undefined);
    throw new Error(`dockerd did not start in ${label}.\n${tail}`);
  }
  const record: OwnerRecord = {
    ownerPid: process.pid,
    ownerStart: processStartTime(process.pid) ?? "",
    dockerdPid: pid,
    dockerdStart: processStartTime(pid) ?? "",
    ...(hostPid !== undefined ? { hostPid } : {}),
  };
  writeFileSync(join(dir, "owner.json"), JSON.stringify(record));

  const host = `unix://${socketPath}`;
  let stopped = false;
  const daemon: DockerDaemon = {
    host,
    socketPath,
    target,
    stateDir: dir,
    logPath,
    pid,
    docker: (args, o = {}) => runDocker(host, args, o),
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await stopDaemon(dir, record, host);
    },
  };
  const deadline = Date.now() + (options.readyTimeoutMs ?? 60_000);
  for (;;) {
    if (await ping(socketPath)) break;
    if (!processAlive(pid) || Date.now() > deadline) {
      const tail = logTail();
      await daemon.stop();
      throw new Error(`dockerd in ${label} did not become ready (${processAlive(pid) ? "timeout" : "exited"}).\n${tail}`);
    }
    await sleep(50);
  }
  return daemon;
}

/** Pid of the first child of `parent`, waiting up to `timeoutMs`. */
async function childOf(parent: number, timeoutMs: number): Promise<number | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const kids = readFileSync(`/proc/${parent}/task/${parent}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
      if (kids.length > 0) return Number(kids[0]);
    } catch {
      if (!processAlive(parent)) return undefined;
    }
    await sleep(10);
  }
  return undefined;
}

/** Whether the daemon answers `GET /_ping` on its socket. */
function ping(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    if (!existsSync(socketPath)) return resolve(false);
    const req = request({ socketPath, path: "/_ping", timeout: 1_000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => {
      req.destroy();
      resolve(false);
    });
    req.end();
  });
}

async function waitExit(pid: number, startTime: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!processAlive(pid, startTime || undefined)) return true;
    await sleep(25);
  }
  return !processAlive(pid, startTime || undefined);
}

/** SIGKILLs every process whose command line mentions `dir` (containerd, shims of a dead dockerd). */
function killMentioning(dir: string): void {
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dir)) process.kill(pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
}

async function stopDaemon(dir: string, record: OwnerRecord, host: string): Promise<void> {
  const { dockerdPid: pid, dockerdStart: start } = record;
  if (processAlive(pid, start || undefined)) {
    // Containers first, with SIGKILL: dockerd's own shutdown would wait for each to stop.
    const ids = (await runDocker(host, ["ps", "-aq"], { timeoutMs: 15_000 })).stdout.split("\n").filter(Boolean);
    if (ids.length > 0) await runDocker(host, ["rm", "-f", ...ids], { timeoutMs: 30_000 });
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      // gone meanwhile
    }
    if (!(await waitExit(pid, start, 15_000))) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone meanwhile
      }
      await waitExit(pid, start, 5_000);
    }
  }
  killMentioning(dir);
  await cleanupFolder(dir, record);
}

async function cleanupFolder(dir: string, record: OwnerRecord | undefined): Promise<void> {
  await unmountUnder(dir);
  const hostPid = record?.hostPid;
  if (hostPid !== undefined && processAlive(hostPid)) await unmountUnder(dir, hostPid);
  rmSync(dir, { recursive: true, force: true });
}

/** Stops and removes daemons whose owning test process died without stopping them. */
async function sweepStaleDaemons(): Promise<void> {
  if (!existsSync(DOCKER_STATE_ROOT)) return;
  for (const name of readdirSync(DOCKER_STATE_ROOT)) {
    const dir = join(DOCKER_STATE_ROOT, name);
    let record: OwnerRecord | undefined;
    try {
      record = JSON.parse(readFileSync(join(dir, "owner.json"), "utf8")) as OwnerRecord;
    } catch {
      // Being started right now (the record follows the folder within a second), or its starter
      // crashed in between: only the latter is old.
      try {
        if (Date.now() - statSync(dir).mtimeMs > 10 * 60_000) await cleanupFolder(dir, undefined);
      } catch {
        // gone meanwhile
      }
      continue;
    }
    if (processAlive(record.ownerPid, record.ownerStart || undefined)) continue;
    if (processAlive(record.dockerdPid, record.dockerdStart || undefined)) {
      try {
        process.kill(record.dockerdPid, "SIGKILL");
      } catch {
        // gone meanwhile
      }
    }
    killMentioning(dir);
    await cleanupFolder(dir, record);
  }
}
