// Shared helpers for the tests that spawn the machine-side agent (built from src/agent/runctl_agent/) through
// its real command line: test/unit/agent.test.ts, agent-s3.test.ts and agent-interruption.test.ts.
// The temp folders and launched runs are tracked per test file (vitest runs each file in its own
// process); call cleanUpAgentTests() from the file's afterAll.
import { spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "vitest";

/** The agent's Python package (its sources). */
export const AGENT_PACKAGE = fileURLToPath(new URL("../../src/agent/runctl_agent", import.meta.url));
/**
 * The agent as machines run it: the zipapp that scripts/embed-agent.mjs builds from {@link AGENT_PACKAGE},
 * run by every helper here. Built when this module loads (a few ms) into a shared temp folder under a
 * name holding its sha256, so it is never stale and test files (or worktrees) running at once agree.
 */
export const AGENT = buildAgent();

function buildAgent(): string {
  const script = fileURLToPath(new URL("../../scripts/embed-agent.mjs", import.meta.url));
  const built = spawnSync(process.execPath, [script, "--pyz-dir", join(tmpdir(), "runctl_agent_build")], { encoding: "utf8" });
  if (built.status !== 0) throw new Error(`building the agent failed: ${built.stderr}`);
  return built.stdout.trim();
}
/** The default interpreter; RUNCTL_TEST_PYTHON picks another (e.g. python3.8, the oldest supported). */
export const PY = process.env["RUNCTL_TEST_PYTHON"] ?? "python3";
/** The Debian interpreter (it has boto3/botocore from python3-boto3). */
export const SYSTEM_PY = "/usr/bin/python3";

/** A parsed JSON object. */
export type Json = Record<string, unknown>;

/** One line of events.jsonl (docs/agent-protocol.md). */
export interface AgentEvent {
  seq: number;
  time: string;
  type: string;
  [key: string]: unknown;
}

/** One frame printed by `follow`: a log line, an event, a heartbeat or the end. */
export interface Frame {
  k: string;
  o?: number;
  l?: string;
  e?: AgentEvent;
  t?: number;
  phase?: string | null;
  message?: string;
}

/** What one agent command printed, its exit code, and its last stdout line parsed as JSON ({} if not JSON). */
export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  json: Json;
}

/** One file of a checkpoint manifest. */
export interface ManifestFile {
  path: string;
  size: number;
  sha256: string;
}

/** A checkpoint's manifest.json. */
export interface Manifest {
  version: number;
  runId: string;
  name: string;
  kind: string;
  step: number | null;
  seq: number;
  createdAt: string;
  hyperparamsHash: string;
  files: ManifestFile[];
  totalBytes: number;
}

/** A run folder and its spec, as made by makeRun(). */
export interface Run {
  root: string;
  code: string;
  store: string;
  runId: string;
  runDir: string;
  ckptDir: string;
  spec: Json;
}

const tempDirs: string[] = [];
const launched: string[] = [];

/** A fresh temporary folder, removed by cleanUpAgentTests(). */
export function tmp(prefix = "runctl-agent-test-"): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(d);
  return d;
}

/** Records a run folder whose agent cleanUpAgentTests() must kill if it is still running. */
export function trackLaunched(runDir: string): void {
  launched.push(runDir);
}

/** Kills every tracked run that has not ended (a failed test must not leave daemons behind), then removes the temp folders. */
export function cleanUpAgentTests(python = PY): void {
  for (const runDir of launched) {
    if (existsSync(join(runDir, "agent.pid")) && !existsSync(join(runDir, "exit_code"))) spawnSync(python, [AGENT, "signal", runDir, "kill"]);
  }
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
}

/** Runs one agent command. Asynchronous so concurrent tests never block each other's event loop. */
export function cli(args: string[], input?: string | Buffer, python = PY, env: NodeJS.ProcessEnv = process.env): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(python, [AGENT, ...args], { env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (d: Buffer) => out.push(d));
    child.stderr.on("data", (d: Buffer) => err.push(d));
    child.stdin.on("error", () => {}); // the agent may exit before reading all of stdin (exit 7)
    child.stdin.end(input ?? "");
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString("utf8");
      const lines = stdout.trim().split("\n");
      let json: Json = {};
      try {
        json = JSON.parse(lines[lines.length - 1] ?? "") as Json;
      } catch {
        json = {};
      }
      resolve({ code, stdout, stderr: Buffer.concat(err).toString("utf8"), json });
    });
  });
}

/** The hex sha256 of data. */
export function sha256(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Resolves after ms milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls check every everyMs until it holds; throws after timeoutMs. */
export async function waitFor(what: string, check: () => boolean, timeoutMs = 20_000, everyMs = 25): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** A file's text, or "" when it cannot be read (not there yet). */
export function readText(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

/** The events the run has written to events.jsonl so far. */
export function readEvents(runDir: string): AgentEvent[] {
  return readText(join(runDir, "events.jsonl"))
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as AgentEvent);
}

/** The single item of items; fails the test when there are none or several. */
export function only<T>(items: T[], what: string): T {
  expect(items, what).toHaveLength(1);
  return items[0] as T;
}

/**
 * A run folder plus a spec in the documented shape, with a trainer script written to code/.
 * root defaults to a fresh temp folder; checkpoints overrides fields of the default `checkpoints`
 * spec (dir storage in root/store, settleMs 2000, pollMs 100).
 */
export function makeRun(script: string, overrides: Json = {}, root = tmp(), checkpoints: Json = {}): Run {
  const code = join(root, "code");
  mkdirSync(code, { recursive: true });
  writeFileSync(join(code, "train.py"), script);
  const runId = `run-${randomBytes(4).toString("hex")}`;
  const runDir = join(root, "runs", runId);
  const store = join(root, "store");
  const ckptDir = join(runDir, "checkpoints");
  const spec: Json = {
    version: 1,
    runId,
    runDir,
    workdir: code,
    mirrorDir: null,
    python: PY,
    argv: ["train.py"],
    env: {},
    hyperparams: {},
    setup: null,
    data: [],
    dataDir: null,
    outputDir: join(runDir, "outputs"),
    checkpoints: { dir: ckptDir, storage: { kind: "dir", path: store }, keep: null, settleMs: 2000, pollMs: 100, ...checkpoints },
    resume: null,
    limits: { maxDurationMs: null, graceMs: 5000 },
    ...overrides,
  };
  return { root, code, store, runId, runDir, ckptDir, spec };
}

/** Options of launch(). */
export interface LaunchOptions {
  /** The agent's interpreter (default PY). */
  python?: string | undefined;
  /** Secrets sent with the spec on stdin. */
  secrets?: Json | undefined;
  /** The agent's environment (default process.env). */
  env?: NodeJS.ProcessEnv | undefined;
}

/** Launches the run (tracked for cleanup); expects success and returns the agent's pid. */
export async function launch(run: Run, options: LaunchOptions = {}): Promise<number> {
  const { python = PY, secrets, env } = options;
  trackLaunched(run.runDir);
  const input = JSON.stringify(secrets ? { ...run.spec, secrets } : run.spec);
  const r = await cli(["launch", run.runDir], input, python, env);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  expect(typeof r.json["pid"]).toBe("number");
  return r.json["pid"] as number;
}

/** Runs `follow` to its end and returns every frame and the exit code. */
export function follow(runDir: string, logOffset = 0, eventsOffset = 0, python = PY, timeoutMs = 40_000): Promise<{ code: number | null; frames: Frame[] }> {
  return new Promise((resolve, reject) => {
    const child = spawn(python, [AGENT, "follow", runDir, "--log-offset", String(logOffset), "--events-offset", String(eventsOffset)]);
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString("utf8")));
    child.stderr.on("data", (d: Buffer) => (err += d.toString("utf8")));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(
        new Error(
          `follow timed out; stderr: ${err}; stdout: ${out.slice(-2000)}; events: ${readText(join(runDir, "events.jsonl"))}; agent.log: ${readText(join(runDir, "agent.log"))}`,
        ),
      );
    }, timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      try {
        const frames = out
          .split("\n")
          .filter((l) => l !== "")
          .map((l) => JSON.parse(l) as Frame);
        resolve({ code, frames });
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
  });
}

/** The events among follow's frames. */
export function eventsOf(frames: Frame[]): AgentEvent[] {
  return frames.filter((f) => f.k === "ev").map((f) => f.e as AgentEvent);
}

/** The one exit event among follow's frames. */
export function exitOf(frames: Frame[]): AgentEvent {
  const exits = eventsOf(frames).filter((e) => e.type === "exit");
  return only(exits, "exit events");
}

/**
 * Follows the run to its end (options.timeoutMs at most, default 40 s); checks the framing
 * invariants every run must satisfy. (An options object, so `.map(runToEnd)` cannot pass an index.)
 */
export async function runToEnd(run: Run, options: { timeoutMs?: number } = {}): Promise<{ frames: Frame[]; events: AgentEvent[]; exit: AgentEvent; log: string }> {
  const { timeoutMs = 40_000 } = options;
  const { code, frames } = await follow(run.runDir, 0, 0, PY, timeoutMs);
  expect(code, readText(join(run.runDir, "agent.log"))).toBe(0);
  expect(frames[frames.length - 1]).toEqual({ k: "end" });
  const events = eventsOf(frames);
  expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
  expect(events[events.length - 1]?.type).toBe("exit");
  expect(events).toEqual(readEvents(run.runDir));
  return { frames, events, exit: exitOf(frames), log: readText(join(run.runDir, "train.log")) };
}

/** The state letter of a process from /proc (R, S, Z, ...), or undefined when there is none. */
export function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  } catch {
    return undefined;
  }
}

/** Whether the process has exited (gone, or a zombie). */
export function processGone(pid: number): boolean {
  const s = processState(pid);
  return s === undefined || s === "Z" || s === "X";
}

/** The storage folder name of commit `seq` of a checkpoint (`g` + 8 digits; docs/checkpoints.md). */
export function genName(seq: number): string {
  return `g${String(seq).padStart(8, "0")}`;
}

/**
 * The folder of a checkpoint's committed generation in a dir storage: the highest
 * `<store>/<runId>/checkpoints/<name>/g<seq>/` that has a manifest.json; undefined when none has.
 */
export function committedDir(store: string, runId: string, name: string): string | undefined {
  const base = join(store, runId, "checkpoints", name);
  const gens = existsSync(base) ? readdirSync(base).filter((g) => /^g\d+$/.test(g)).sort().reverse() : [];
  const gen = gens.find((g) => existsSync(join(base, g, "manifest.json")));
  return gen === undefined ? undefined : join(base, gen);
}

/** A committed checkpoint's manifest in a dir storage (its highest generation with a manifest). */
export function manifestOf(store: string, runId: string, name: string): Manifest {
  const dir = committedDir(store, runId, name);
  if (dir === undefined) throw new Error(`checkpoint ${name} of run ${runId} has no manifest in ${store}`);
  return JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as Manifest;
}
