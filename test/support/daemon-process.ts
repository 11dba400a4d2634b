/**
 * Small process helpers for test daemons started in the background (detached, output to a log file),
 * possibly inside a test host's namespaces, and stopped or swept later by pid and start time.
 */
import { spawn } from "node:child_process";
import { closeSync, openSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { processAlive, processStartTime, sleep } from "../testbed/sys.js";

/** A process identified so that a recycled pid is never mistaken for it. */
export interface ProcessRef {
  readonly pid: number;
  /** Field 22 of /proc/PID/stat ("" when unknown). */
  readonly start: string;
}

/** The {@link ProcessRef} of a running process. */
export function processRef(pid: number): ProcessRef {
  return { pid, start: processStartTime(pid) ?? "" };
}

/** Whether the referenced process still runs (not a zombie, same start time). */
export function refAlive(ref: ProcessRef): boolean {
  return processAlive(ref.pid, ref.start || undefined);
}

/**
 * Spawns `argv` detached, stdin closed, stdout and stderr appended to `logPath`; returns its pid.
 * The child is unref'd: it outlives the test process unless stopped.
 */
export function spawnDetached(argv: readonly string[], logPath: string, options: { readonly env?: NodeJS.ProcessEnv } = {}): number {
  const out = openSync(logPath, "a");
  try {
    const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ["ignore", out, out], ...(options.env ? { env: options.env } : {}) });
    child.on("error", () => {});
    child.unref();
    if (child.pid === undefined) throw new Error(`Could not spawn ${argv[0]}.`);
    return child.pid;
  } finally {
    closeSync(out);
  }
}

/**
 * Pid of the first child of `parent`, waiting up to `timeoutMs` (`nsenter -p` forks: the program it
 * runs is its child); undefined when the parent exits first or nothing appears in time.
 */
export async function childOf(parent: number, timeoutMs: number): Promise<number | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const kids = readFileSync(`/proc/${parent}/task/${parent}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
      if (kids.length > 0) return Number(kids[0]);
    } catch {
      // the parent is gone
    }
    if (!processAlive(parent)) return undefined;
    await sleep(10);
  }
  return undefined;
}

/** Waits up to `timeoutMs` for the process to exit; returns whether it did. */
export async function waitExit(ref: ProcessRef, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!refAlive(ref)) return true;
    await sleep(25);
  }
  return !refAlive(ref);
}

/** Sends `signal` unless the process is gone (or its pid was recycled). */
export function signalRef(ref: ProcessRef, signal: NodeJS.Signals): void {
  if (!refAlive(ref)) return;
  try {
    process.kill(ref.pid, signal);
  } catch {
    // gone meanwhile
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once every process has exited (or 5 s more passed). */
export async function stopProcesses(refs: readonly ProcessRef[], graceMs: number): Promise<void> {
  for (const r of refs) signalRef(r, "SIGTERM");
  const exited = await Promise.all(refs.map((r) => waitExit(r, graceMs)));
  const left = refs.filter((_, i) => !exited[i]);
  for (const r of left) signalRef(r, "SIGKILL");
  await Promise.all(left.map((r) => waitExit(r, 5_000)));
}

/**
 * Pids of the processes whose command line, working folder or an open file is at or below `dir`
 * (a dead daemon's helpers: slurmstepd holds its node's log file open). This process is left out.
 */
export function processesUsing(dir: string): number[] {
  const inside = (p: string): boolean => p === dir || p.startsWith(`${dir}/`);
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").some((a) => a.includes(dir))) {
        found.push(pid);
        continue;
      }
      if (inside(readlinkSync(`/proc/${pid}/cwd`))) {
        found.push(pid);
        continue;
      }
      if (readdirSync(`/proc/${pid}/fd`).some((fd) => inside(safeReadlink(`/proc/${pid}/fd/${fd}`)))) found.push(pid);
    } catch {
      // gone meanwhile, or a kernel thread
    }
  }
  return found;
}

function safeReadlink(path: string): string {
  try {
    return readlinkSync(path);
  } catch {
    return "";
  }
}

/** SIGKILLs every process {@link processesUsing} `dir`, a few rounds (killing one may expose another). */
export async function killProcessesUsing(dir: string): Promise<void> {
  for (let round = 0; round < 5; round++) {
    const pids = processesUsing(dir);
    if (pids.length === 0) return;
    for (const pid of pids) signalRef({ pid, start: "" }, "SIGKILL");
    await sleep(50);
  }
}
