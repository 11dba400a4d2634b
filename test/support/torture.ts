/**
 * The torture loop (issue 10's acceptance test), shared by test/e2e/torture.test.ts and
 * bench/torture.ts. Each iteration starts a run of the torture trainer on an SSH test host, kills one
 * thing at a random moment (seeded), lets the run end, then checks the invariants through runctl's
 * public API (torture-checks.ts) and the host's process table (torture-host.ts). Whatever an
 * iteration leaves behind (processes, a partition, a stopped S3 server) is undone before the next.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import type { CheckpointEvent, CheckpointStore, RunEvent, RunResult, SshHost, TrainingRun } from "runctl";
import type { TestHost } from "../testbed/testbed.js";
import type { TestS3Server } from "./s3-server.js";
import { INVARIANTS, checkCheckpoints, checkLogLines, type Invariant, type Violation } from "./torture-checks.js";
import { killRunProcesses, leftoverProcesses, sigkill, waitForRunProcess, type RunProcessKind } from "./torture-host.js";
import { TORTURE_KNOBS, attachTortureRun, startTortureRun, trainerHyperparams, type TortureRunSpec, type TortureStorageSpec } from "./torture-plan.js";

/** What an iteration kills. */
export type KillKind = "trainer" | "agent" | "client" | "s3" | "ssh";
/** Every kind, in report order. */
export const KILL_KINDS: readonly KillKind[] = ["trainer", "agent", "client", "s3", "ssh"];

const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CLIENT_SCRIPT = fileURLToPath(new URL("./torture-client.ts", import.meta.url));

/** Where one torture loop runs. */
export interface TortureTarget {
  /** Short name used in run ids and the report (`machine`, `s3`). */
  readonly label: string;
  readonly testHost: TestHost;
  readonly host: SshHost;
  readonly storage: TortureStorageSpec;
  /** The S3 server behind `storage` (the `s3` kill restarts it); required for that kind. */
  readonly s3Server?: TestS3Server | undefined;
}

/** Options of {@link runTortureLoop}. */
export interface TortureOptions {
  readonly iterations: number;
  readonly seed: number;
  /** Kinds to draw from. @defaultValue every kind the target supports */
  readonly kinds?: readonly KillKind[] | undefined;
  /** Progress lines. @defaultValue none */
  readonly log?: ((line: string) => void) | undefined;
}

/** What one iteration did and found. */
export interface IterationRecord {
  readonly index: number;
  readonly runId: string;
  readonly kind: KillKind;
  /** Delay after the trainer started when the kill came (ms). */
  readonly delayMs: number;
  /** Whether the kill hit something alive (a trainer or agent already gone is a miss). */
  readonly delivered: boolean;
  readonly status: string;
  readonly errorCode: string | undefined;
  readonly committed: number;
  readonly listed: number;
  readonly resumed: boolean;
  /** Kinds of the processes left running after the run ended (agent, trainer, daemon-child, ...). */
  readonly leftover: readonly RunProcessKind[];
  readonly violations: readonly Violation[];
  readonly durationMs: number;
}

/** The counts of one loop. */
export interface TortureReport {
  readonly label: string;
  readonly seed: number;
  readonly iterations: number;
  readonly kills: Readonly<Record<KillKind, { readonly attempted: number; readonly delivered: number }>>;
  readonly violations: Readonly<Record<Invariant, number>>;
  readonly records: readonly IterationRecord[];
  readonly durationMs: number;
}

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed: `RUNCTL_TORTURE_SEED` when set (to replay a run), else a fresh one. */
export function tortureSeed(): number {
  const fromEnv = Number(process.env["RUNCTL_TORTURE_SEED"]);
  return Number.isInteger(fromEnv) && fromEnv >= 0 ? fromEnv : Math.floor(Math.random() * 2 ** 31);
}

/** Kinds in shuffled rounds, so every kind comes up about equally often even in a short loop. */
function schedule(kinds: readonly KillKind[], n: number, rng: () => number): KillKind[] {
  const out: KillKind[] = [];
  while (out.length < n) {
    const round = [...kinds];
    for (let i = round.length - 1; i > 0; i--) {
      const j = Math.floor(rng() * (i + 1));
      [round[i], round[j]] = [round[j]!, round[i]!];
    }
    out.push(...round);
  }
  return out.slice(0, n);
}

const between = (rng: () => number, [lo, hi]: readonly [number, number]): number => Math.round(lo + rng() * (hi - lo));

/** How a run ended, as far as the torture loop cares. */
interface Outcome {
  readonly status: string;
  readonly exitCode: number | null;
  readonly error?: { readonly code: string; readonly message: string } | undefined;
}

/** Resolves with the run's outcome, or "hung" after `ms`. */
async function within(run: PromiseLike<RunResult>, ms: number): Promise<Outcome | "hung"> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"hung">((resolve) => (timer = setTimeout(() => resolve("hung"), ms)));
  try {
    return await Promise.race([Promise.resolve(run).then((r) => r, (err: unknown) => failedResult(err)), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A rejected run (could not be started or followed) reads as a failed one with the error's code. */
function failedResult(err: unknown): Outcome {
  const code = (err as { code?: string }).code ?? "ERROR";
  return { status: "failed", exitCode: null, error: { code, message: err instanceof Error ? err.message : String(err) } };
}

/** Every event of a run, collected as it comes; `phase(p)` resolves once phase `p` was seen. */
function collect(run: TrainingRun): { events: RunEvent[]; phase: (p: string) => Promise<void>; done: Promise<void> } {
  const events: RunEvent[] = [];
  const waiters = new Map<string, () => void>();
  const seen = new Set<string>();
  const done = (async () => {
    try {
      for await (const e of run) {
        events.push(e);
        if (e.type === "phase") {
          seen.add(e.phase);
          waiters.get(e.phase)?.();
        }
      }
    } catch {
      // the result says what went wrong
    }
  })();
  const phase = (p: string): Promise<void> =>
    seen.has(p) ? Promise.resolve() : new Promise<void>((resolve) => waiters.set(p, resolve));
  return { events, phase, done };
}

/** Waits for a line on the child's stdout; false if it exits or `timeoutMs` passes first. */
function waitForChildLine(child: ChildProcess, line: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let buf = "";
    const timer = setTimeout(() => finish(false), timeoutMs);
    const onData = (d: Buffer): void => {
      buf += d.toString();
      if (buf.split("\n").includes(line)) finish(true);
    };
    const onExit = (): void => finish(false);
    function finish(ok: boolean): void {
      clearTimeout(timer);
      child.stdout?.off("data", onData);
      child.off("exit", onExit);
      resolve(ok);
    }
    child.stdout?.on("data", onData);
    child.once("exit", onExit);
  });
}

/**
 * The run's output lines through `run.logs()` (from the first line; it ends with the run). A run that
 * never ended would never end this either: after `waitMs`, what arrived so far is returned.
 */
async function lines(run: TrainingRun, waitMs: number): Promise<string[]> {
  const out: string[] = [];
  const reading = (async () => {
    for await (const l of run.logs()) out.push(l);
  })().catch(() => {});
  await Promise.race([reading, sleep(waitMs)]);
  return [...out];
}

function describeProcesses(ps: readonly { kind: string; pid: number }[]): string {
  const byKind = new Map<string, number>();
  for (const p of ps) byKind.set(p.kind, (byKind.get(p.kind) ?? 0) + 1);
  return [...byKind].map(([k, n]) => `${n} ${k}`).join(", ");
}

/** One iteration: run, kill, end, check. Never throws for what runctl does; throws only on harness failure. */
async function iteration(target: TortureTarget, index: number, seed: number, kind: KillKind, rng: () => number): Promise<IterationRecord> {
  const started = Date.now();
  const k = TORTURE_KNOBS;
  const runId = `torture-${target.label}-${seed}-${index}`;
  const resumeId = `${runId}-resume`;
  const steps = kind === "agent" ? k.agentKillSteps : k.steps;
  const spec: TortureRunSpec = { host: target.host, storage: target.storage, runId, hyperparams: trainerHyperparams({ steps }) };
  // Draw every random number up front, so a seed replays the same schedule whatever happens.
  const delayMs = Math.floor(rng() * (kind === "agent" ? k.agentKillWindowMs : k.killWindowMs));
  const faultMs = kind === "ssh" ? between(rng, k.partitionMs) : between(rng, k.s3OutageMs);
  const violations: Violation[] = [];
  const leftover: RunProcessKind[] = [];
  let delivered = false;
  let child: ChildProcess | undefined;
  let partitioned = false;
  let s3Down = false;
  let run: TrainingRun;
  let collected: ReturnType<typeof collect>;
  try {
    if (kind === "client") {
      child = spawn(process.execPath, ["--import", "tsx", CLIENT_SCRIPT, JSON.stringify(spec)], { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"], env: process.env });
      let stderr = "";
      child.stderr?.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
      const exited = new Promise<void>((resolve) => child!.once("close", () => resolve()));
      if (!(await waitForChildLine(child, "PHASE training", k.runTimeoutMs))) {
        throw new Error(`torture client for ${runId} never reached training: ${stderr}`);
      }
      await sleep(delayMs);
      delivered = child.exitCode === null && child.signalCode === null && child.kill("SIGKILL");
      await exited;
      run = attachTortureRun(spec);
      collected = collect(run);
    } else {
      run = startTortureRun(spec);
      collected = collect(run);
      const training = await Promise.race([collected.phase("training").then(() => true), collected.done.then(() => false)]);
      if (training) {
        await sleep(delayMs);
        if (kind === "trainer" || kind === "agent") {
          const p = await waitForRunProcess(target.testHost, runId, kind, 1_000);
          delivered = p !== undefined && sigkill(p.pid);
        } else if (kind === "s3") {
          if (!target.s3Server) throw new Error(`the ${target.label} target has no S3 server to restart`);
          s3Down = true;
          await target.s3Server.kill();
          delivered = true;
          await sleep(faultMs);
          await target.s3Server.restart();
          s3Down = false;
        } else {
          partitioned = true;
          await target.testHost.partition();
          delivered = true;
          await sleep(faultMs);
          await target.testHost.heal();
          partitioned = false;
        }
      }
    }

    const result = await within(run, k.runTimeoutMs);
    const hung = result === "hung";
    if (hung) {
      violations.push({ invariant: "run-hung", detail: `no end ${k.runTimeoutMs} ms after the ${kind} kill` });
      await run.cancel({ strategy: "detach" }).catch(() => {});
    } else {
      await Promise.race([collected.done, sleep(5_000)]);
    }

    // No process of the run outlives it.
    const left = await leftoverProcesses(target.testHost, [runId], hung ? 0 : k.leftoverGraceMs);
    leftover.push(...left.map((p) => p.kind));
    if (left.length > 0) violations.push({ invariant: "leftover-process", detail: `${describeProcesses(left)} still running after the run ended` });
    await killRunProcesses(target.testHost, [runId]);

    // Log lines: a contiguous prefix, each once.
    const seenLines = await lines(run, hung ? 500 : 5_000);
    const complete = (!hung && result.exitCode === 0) || seenLines.includes("TRAINING_DONE");
    violations.push(...checkLogLines(seenLines, complete, steps));

    // Checkpoints through the API.
    const commits = collected.events.filter((e): e is CheckpointEvent => e.type === "checkpoint");
    let store: CheckpointStore | undefined;
    try {
      store = run.checkpoints();
    } catch (err) {
      // No storage known: the run never reached a machine. Only a problem if something was committed.
      if (commits.length > 0) violations.push({ invariant: "checkpoints-unreadable", detail: `run.checkpoints() threw ${(err as Error).message}` });
    }
    const { listed, latest, violations: ckptViolations } = store ? await checkCheckpoints(store, commits, k.keep) : { listed: [], latest: undefined, violations: [] };
    violations.push(...ckptViolations);
    // A trainer that exited 0 saved its last step; that save is committed (storage came back within seconds).
    if (!hung && result.status === "succeeded" && latest?.step !== steps) {
      violations.push({
        invariant: "final-checkpoint-missing",
        detail: `exit 0 after saving step ${steps}, latest() is ${latest ? `${latest.name} (step ${latest.step})` : "undefined"}; commits seen: ${commits.map((c) => c.name).join(",") || "none"}`,
      });
    }

    // A resume restores only complete data (the trainer checks its own payload).
    let resumed = false;
    if (listed.length > 0) {
      const resumeSpec: TortureRunSpec = { ...spec, runId: resumeId, hyperparams: trainerHyperparams({ "check-only": 1, "spawn-helper": 0 }) };
      const from = target.storage.kind === "s3" ? runId : { runId, storage: listed[0]!.storage };
      let resume: TrainingRun | undefined;
      let r: Outcome | "hung";
      try {
        resume = startTortureRun(resumeSpec, from);
        r = await within(resume, k.runTimeoutMs);
      } catch (err) {
        r = failedResult(err); // refused at the plan call
      }
      if (r === "hung") {
        violations.push({ invariant: "run-hung", detail: `the resume run ${resumeId} did not end` });
        await resume?.cancel({ strategy: "detach" }).catch(() => {});
      }
      const rl = resume ? await lines(resume, r === "hung" ? 500 : 5_000) : [];
      const bad = rl.find((l) => l.startsWith("RESUME_BAD"));
      const ok = rl.find((l) => l.startsWith("RESUME_OK"));
      if (bad) violations.push({ invariant: "resume-incomplete-data", detail: bad });
      else if (r !== "hung" && (r.status !== "succeeded" || !ok)) {
        violations.push({ invariant: "resume-failed", detail: `${r.status} ${r.error ? `${r.error.code}: ${r.error.message}` : ""}${ok ? "" : " (nothing restored)"}`.trim() });
      }
      resumed = ok !== undefined;
      const leftResume = await leftoverProcesses(target.testHost, [resumeId], r === "hung" ? 0 : k.leftoverGraceMs);
      leftover.push(...leftResume.map((p) => p.kind));
      if (leftResume.length > 0) violations.push({ invariant: "leftover-process", detail: `resume run: ${describeProcesses(leftResume)} still running after it ended` });
    }

    return {
      index,
      runId,
      kind,
      delayMs,
      delivered,
      status: hung ? "hung" : result.status,
      errorCode: hung ? undefined : result.error?.code,
      committed: commits.length,
      listed: listed.length,
      resumed,
      leftover,
      violations,
      durationMs: Date.now() - started,
    };
  } finally {
    // Leave nothing behind, whatever happened above.
    if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    if (partitioned) await target.testHost.heal();
    if (s3Down) await target.s3Server?.restart();
    await killRunProcesses(target.testHost, [runId, resumeId]);
  }
}

/** Runs `iterations` torture iterations against one target and counts kills and violations. */
export async function runTortureLoop(target: TortureTarget, options: TortureOptions): Promise<TortureReport> {
  const started = Date.now();
  const say = options.log ?? (() => {});
  const supported = KILL_KINDS.filter((kind) => kind !== "s3" || target.s3Server !== undefined);
  const kinds = options.kinds ?? supported;
  // One stream per target, so two loops run side by side replay the same way from one seed.
  const rng = seededRandom(options.seed ^ [...target.label].reduce((h, c) => Math.imul(h, 31) + c.charCodeAt(0), 7));
  const plan = schedule(kinds, options.iterations, rng);
  const kills = Object.fromEntries(KILL_KINDS.map((kind) => [kind, { attempted: 0, delivered: 0 }])) as Record<KillKind, { attempted: number; delivered: number }>;
  const violations = Object.fromEntries(INVARIANTS.map((v) => [v, 0])) as Record<Invariant, number>;
  const records: IterationRecord[] = [];
  for (const [i, kind] of plan.entries()) {
    const rec = await iteration(target, i, options.seed, kind, rng);
    records.push(rec);
    kills[kind].attempted++;
    if (rec.delivered) kills[kind].delivered++;
    for (const v of rec.violations) violations[v.invariant]++;
    const found = rec.violations.length === 0 ? "ok" : rec.violations.map((v) => `${v.invariant} (${v.detail})`).join("; ");
    say(
      `[torture ${target.label} #${i} ${kind}${rec.delivered ? "" : " (missed)"} @${rec.delayMs}ms] ${rec.status}${rec.errorCode ? ` ${rec.errorCode}` : ""}, ` +
        `${rec.committed} committed, ${rec.listed} listed${rec.resumed ? ", resumed" : ""}, ${rec.durationMs} ms: ${found}`,
    );
  }
  return { label: target.label, seed: options.seed, iterations: plan.length, kills, violations, records, durationMs: Date.now() - started };
}

/** Total violations of some reports. */
export function totalViolations(reports: readonly TortureReport[]): number {
  return reports.reduce((n, r) => n + Object.values(r.violations).reduce((a, b) => a + b, 0), 0);
}

/** The counts as a small table: kills by kind, violations by invariant, seed, time. */
export function formatTortureReport(reports: readonly TortureReport[]): string {
  const out: string[] = [];
  for (const r of reports) {
    const kills = KILL_KINDS.filter((kind) => r.kills[kind].attempted > 0)
      .map((kind) => `${kind} ${r.kills[kind].delivered}/${r.kills[kind].attempted}`)
      .join(", ");
    const bad = INVARIANTS.filter((v) => r.violations[v] > 0).map((v) => `${v} ${r.violations[v]}`);
    const hit = r.records.filter((x) => x.violations.length > 0).length;
    out.push(
      `[torture] ${r.label}: ${r.iterations} iterations in ${(r.durationMs / 1000).toFixed(1)} s, seed ${r.seed}`,
      `[torture]   kills (delivered/attempted): ${kills}`,
      `[torture]   violations: ${bad.length === 0 ? "0" : `${bad.join(", ")} (in ${hit} of ${r.iterations} iterations)`}`,
    );
    const left = new Map<string, number>();
    for (const kind of r.records.flatMap((x) => x.leftover)) left.set(kind, (left.get(kind) ?? 0) + 1);
    if (left.size > 0) out.push(`[torture]   processes left over, by kind: ${[...left].map(([kind, n]) => `${kind} ${n}`).join(", ")}`);
    for (const kind of KILL_KINDS) {
      const recs = r.records.filter((x) => x.kind === kind);
      if (recs.length === 0) continue;
      const byInv = new Map<string, number>();
      for (const x of recs) for (const inv of new Set(x.violations.map((v) => v.invariant))) byInv.set(inv, (byInv.get(inv) ?? 0) + 1);
      if (byInv.size > 0) out.push(`[torture]     after ${kind} kills: ${[...byInv].map(([inv, n]) => `${inv} in ${n}/${recs.length}`).join(", ")}`);
    }
  }
  out.push(`[torture] total violations: ${totalViolations(reports)}`);
  return out.join("\n");
}
