/**
 * The torture test's view of a test host's process table and its fault controls. Processes are read
 * from this machine's /proc for the pids of the host's network namespace (as root), so the check does
 * not depend on the host answering over SSH, nor on any file runctl keeps on the machine.
 */
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import type { TestHost } from "../testbed/testbed.js";

/** What a process of a run is, judged by its command line. */
export type RunProcessKind = "agent" | "agent-command" | "trainer" | "daemon-child" | "other";

/** One live process that belongs to a run. */
export interface RunProcess {
  /** Pid in this machine's pid namespace. */
  readonly pid: number;
  readonly kind: RunProcessKind;
  readonly cmdline: string;
}

function readProc(pid: number, file: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${file}`, "utf8");
  } catch {
    return undefined; // exited meanwhile
  }
}

/** Zombies are dead already (their parent reaps them); only running processes count. */
function isZombie(pid: number): boolean {
  const stat = readProc(pid, "stat");
  if (stat === undefined) return true;
  return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
}

function kindOf(cmdline: string): RunProcessKind {
  // The supervising daemon is `<root>/agent/runctl-agent-<sha>/__main__.py supervise <runDir>`;
  // other subcommands (follow, status, signal) are short commands the client runs over SSH.
  if (/runctl[-_]agent/.test(cmdline)) return /\ssupervise\s/.test(cmdline) ? "agent" : "agent-command";
  if (cmdline.includes("--as-daemon-helper")) return "daemon-child";
  if (cmdline.includes("torture_trainer.py")) return "trainer";
  return "other";
}

/**
 * Live processes on `host` that belong to run `runId`: its environment names the run
 * (`RUNCTL_RUN_ID`, inherited by the trainer and everything it starts) or its command line holds the
 * run's folder (`.../runs/<runId>`, the agent's arguments).
 */
export async function runProcesses(host: TestHost, runId: string): Promise<RunProcess[]> {
  const found: RunProcess[] = [];
  const envMark = `RUNCTL_RUN_ID=${runId}\0`;
  const dirMark = new RegExp(`/runs/${runId}(?:/|\\s|$)`);
  for (const pid of await host.pids()) {
    const raw = readProc(pid, "cmdline");
    if (raw === undefined) continue;
    const cmdline = raw.split("\0").join(" ").trim();
    const env = readProc(pid, "environ") ?? "";
    if (!(`\0${env}`.includes(`\0${envMark}`) || dirMark.test(cmdline))) continue;
    if (isZombie(pid)) continue;
    found.push({ pid, kind: kindOf(cmdline), cmdline });
  }
  return found;
}

/** Polls until the first process of `kind` for `runId` shows up (undefined after `timeoutMs`). */
export async function waitForRunProcess(host: TestHost, runId: string, kind: RunProcessKind, timeoutMs: number): Promise<RunProcess | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const p = (await runProcesses(host, runId)).find((x) => x.kind === kind);
    if (p || Date.now() > deadline) return p;
    await sleep(25);
  }
}

/** Waits up to `graceMs` for every process of the runs to end; returns those still alive then. */
export async function leftoverProcesses(host: TestHost, runIds: readonly string[], graceMs: number): Promise<RunProcess[]> {
  const deadline = Date.now() + graceMs;
  for (;;) {
    const left = (await Promise.all(runIds.map((id) => runProcesses(host, id)))).flat();
    if (left.length === 0 || Date.now() > deadline) return left;
    await sleep(100);
  }
}

/** SIGKILLs every process of the runs (the harness cleaning up after a violation); waits for them to go. */
export async function killRunProcesses(host: TestHost, runIds: readonly string[]): Promise<void> {
  for (let round = 0; round < 50; round++) {
    const left = (await Promise.all(runIds.map((id) => runProcesses(host, id)))).flat();
    if (left.length === 0) return;
    for (const p of left) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {
        // gone meanwhile
      }
    }
    await sleep(50);
  }
  throw new Error(`processes of ${runIds.join(", ")} survive SIGKILL on ${host.name}`);
}

/** SIGKILLs one process; false when it was already gone. */
export function sigkill(pid: number): boolean {
  try {
    process.kill(pid, "SIGKILL");
    return true;
  } catch {
    return false;
  }
}
