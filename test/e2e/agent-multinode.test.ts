/**
 * Multi-node training on the machine side, without the client: two test hosts, each with the agent
 * (the embedded zipapp, uploaded over SSH) and test/fixtures/trainers/train_ddp.py, each launched with
 * a spec whose `nodes` gives its rank. torchrun (Debian's torch 1.13) joins them over gloo. Checks:
 * both ranks end with the same weights, rank 0 commits checkpoints that verify, a rank that dies
 * fails the other within seconds, and a node that vanishes leaves the other's torchrun hung until
 * a stop (SIGTERM, then SIGKILL at graceMs) ends it.
 */
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { posix } from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SshTransport } from "runctl";
import { AGENT_PYZ_BASE64 } from "../../src/agent/agent-source.generated.js";
import { inspectorOf } from "../support/ssh-hosts.js";
import { leaseTestHosts, type HostLease, type TestHost } from "../testbed/inject.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/trainers/", import.meta.url));
const PY = "/usr/bin/python3"; // Debian's, with python3-torch
const GRACE_MS = 3_000;

interface Node {
  readonly host: TestHost;
  readonly t: SshTransport;
  readonly root: string;
  readonly agent: string;
}

type Json = Record<string, unknown>;

let lease: HostLease;
let nodes: Node[] = [];
const runDirs: [Node, string][] = [];

async function run(n: Node, argv: string[], stdin?: string | Uint8Array): Promise<string> {
  const r = await n.t.exec(argv, stdin === undefined ? {} : { stdin });
  if (r.exitCode !== 0) throw new Error(`${argv.join(" ")} on ${n.host.name}: exit ${r.exitCode}: ${r.stderrTail}`);
  return r.stdout;
}

/** Uploads the agent and the trainer into a fresh folder in the host user's home. */
async function prepare(host: TestHost): Promise<Node> {
  const t = await inspectorOf(host);
  const root = posix.join(host.home, `mn-${randomBytes(4).toString("hex")}`);
  const agent = posix.join(root, "agent", "runctl-agent.pyz");
  const n: Node = { host, t, root, agent };
  await run(n, ["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", agent], Buffer.from(AGENT_PYZ_BASE64, "base64"));
  for (const f of ["train_ddp.py", "runctl_fixture.py"]) await n.t.putFile(`${FIXTURES}${f}`, posix.join(root, "code", f));
  return n;
}

/** Launches one rank: `launch RUN_DIR` over SSH with a spec holding `nodes`. */
async function launch(n: Node, runId: string, rank: number, port: number, args: string[], extra: Json = {}): Promise<string> {
  const runDir = posix.join(n.root, "runs", runId);
  const spec = {
    ...extra,
    version: 1,
    runId,
    workdir: posix.join(n.root, "code"),
    python: PY,
    argv: ["train_ddp.py", ...args],
    env: {},
    hyperparams: {},
    checkpoints: { storage: rank === 0 ? { kind: "dir", path: posix.join(n.root, "store") } : null, settleMs: 2000, pollMs: 200 },
    limits: { graceMs: GRACE_MS },
    nodes: { rank, count: 2, procsPerNode: 1, masterAddr: nodes[0]!.host.address, masterPort: port, addrs: nodes.map((x) => x.host.address), launcher: "torchrun" },
  };
  const out = await run(n, [PY, n.agent, "launch", runDir], JSON.stringify(spec));
  expect(JSON.parse(out.trim().split("\n").pop()!)).toHaveProperty("pid");
  runDirs.push([n, runDir]);
  return runDir;
}

// The hosts' homes are on this machine's filesystem: results are read from here, as root.
function events(runDir: string): Json[] {
  const p = posix.join(runDir, "events.jsonl");
  return existsSync(p) ? readFileSync(p, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as Json) : [];
}

function log(runDir: string): string {
  const p = posix.join(runDir, "train.log");
  return existsSync(p) ? readFileSync(p, "utf8") : "";
}

function exitOf(runDir: string): Json | undefined {
  return events(runDir).find((e) => e["type"] === "exit");
}

async function waitFor<T>(what: string, get: () => T | undefined | false, timeoutMs: number, context: () => string = () => ""): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = get();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${context()}`);
    await sleep(50);
  }
}

function finalStep(text: string): { step: number; sha: string } {
  const m = /^FINAL_STEP (\d+) weights_sha256=([0-9a-f]{64})$/m.exec(text);
  if (!m) throw new Error(`no FINAL_STEP line in:\n${text.slice(-3000)}`);
  return { step: Number(m[1]), sha: m[2]! };
}

/** Pids (this machine's) of a host's processes whose command line matches. */
async function hostPids(h: TestHost, test: (cmd: string) => boolean): Promise<number[]> {
  const found: number[] = [];
  for (const pid of await h.pids()) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
      if (test(cmd)) found.push(pid);
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

const isWorker = (tag: string) => (cmd: string) => cmd.includes("train_ddp.py") && cmd.includes(tag) && !cmd.includes("torch.distributed.run");
const port = (): number => 29_000 + Math.floor(Math.random() * 900);
const both = (runId: string, p: number, args: string[], extra: (n: Node) => Json = () => ({})): Promise<string[]> =>
  Promise.all(nodes.map((n, rank) => launch(n, runId, rank, p, args, extra(n))));
/** The first run's results, which later tests resume from and compare with. */
const first = { runId: "", sha: "" };
const dump = (dirs: string[]) => () => dirs.map((d) => `--- ${d}\n${log(d).slice(-2500)}\n${JSON.stringify(events(d).slice(-4))}`).join("\n");

beforeAll(async () => {
  lease = await leaseTestHosts(2);
  nodes = await Promise.all(lease.hosts.map(prepare));
});

afterAll(async () => {
  for (const [n, runDir] of runDirs) {
    if (!existsSync(posix.join(runDir, "exit_code"))) await n.t.exec([PY, n.agent, "signal", runDir, "kill"]).then(() => undefined, () => undefined);
  }
  for (const n of nodes) {
    await n.t.exec(["rm", "-rf", n.root]).then(() => undefined, () => undefined);
    await n.t.close();
  }
  await lease?.release();
});

describe("the agent on two nodes (torchrun, gloo)", () => {
  it("trains one model across both ranks; rank 0 commits checkpoints that hold the final weights", async () => {
    const runId = `mn-ok-${randomBytes(3).toString("hex")}`;
    const dirs = await both(runId, port(), ["--steps=40", "--checkpoint-every=20", "--sleep-per-step=0.01"]);
    const [e0, e1] = await Promise.all(dirs.map((d) => waitFor("exit", () => exitOf(d), 45_000, dump(dirs))));
    expect(e0, dump(dirs)()).toMatchObject({ status: "succeeded", exitCode: 0 });
    expect(e1, dump(dirs)()).toMatchObject({ status: "succeeded", exitCode: 0 });
    const [l0, l1] = dirs.map(log);
    expect(l0).toContain(`RUN_INFO run_id=${runId} node_rank=0 num_nodes=2 master_addr=${nodes[0]!.host.address}`);
    expect(l1).toContain(`RUN_INFO run_id=${runId} node_rank=1 num_nodes=2 master_addr=${nodes[0]!.host.address}`);
    expect(l1).toMatch(/^DDP_INFO rank=1 world_size=2 local_rank=0 /m);
    // The agent found the interface that holds each node's address for gloo.
    for (const l of [l0, l1]) expect(l).toMatch(/^DDP_INFO .* gloo_ifname=eth0 /m);
    const [f0, f1] = [finalStep(l0!), finalStep(l1!)];
    expect(f0.step).toBe(40);
    expect(f1).toEqual(f0); // DDP kept the replicas identical
    expect(l1).not.toContain("RUNCTL_METRIC"); // metrics come from rank 0 only
    expect(l0!.match(/^RUNCTL_METRIC /gm)).toHaveLength(40);

    // Only rank 0 writes and commits checkpoints; its last one holds exactly the final weights.
    const ck0 = events(dirs[0]!).filter((e) => e["type"] === "checkpoint");
    expect(ck0.map((e) => [e["name"], e["step"]])).toEqual([["step-00000020", 20], ["step-00000040", 40]]);
    expect(events(dirs[1]!).filter((e) => e["type"] === "checkpoint")).toEqual([]);
    const gen = String(ck0[1]!["location"]);
    const manifest = JSON.parse(readFileSync(posix.join(gen, "manifest.json"), "utf8")) as { files: { path: string; sha256: string }[] };
    expect(manifest.files.map((f) => f.path)).toEqual(["model.pt"]);
    const pt = posix.join(gen, "files", "model.pt");
    expect(createHash("sha256").update(readFileSync(pt)).digest("hex")).toBe(manifest.files[0]!.sha256);
    const check = spawnSync(PY, ["-c", [
      "import hashlib, struct, sys, torch",
      "c = torch.load(sys.argv[1]); h = hashlib.sha256()",
      "for t in c['model'].values():",
      "    v = t.double().reshape(-1).tolist(); h.update(struct.pack('<%dd' % len(v), *v))",
      "print(c['step'], c['weights_sha256'], h.hexdigest())",
    ].join("\n"), pt], { encoding: "utf8", timeout: 60_000 });
    expect(check.stdout.trim(), check.stderr).toBe(`40 ${f0.sha} ${f0.sha}`);
    first.runId = runId;
    first.sha = f0.sha;
  });

  it("every rank resumes from the same checkpoint and ends with the uninterrupted run's weights", async () => {
    expect(first.sha).not.toBe("");
    // Rank 1 reads the same storage from its own machine (S3 in real life): here a copy it owns.
    const store = posix.join(nodes[0]!.root, "store");
    const copy = posix.join(nodes[1]!.root, "store-copy");
    expect(spawnSync("cp", ["-a", store, copy]).status).toBe(0);
    expect(spawnSync("chown", ["-R", `${nodes[1]!.host.user}:`, copy]).status).toBe(0);
    const resume = (n: Node): Json => ({ resume: { storage: { kind: "dir", path: n === nodes[0] ? store : copy }, runId: first.runId, name: "step-00000020" } });
    const dirs = await both(`mn-res-${randomBytes(3).toString("hex")}`, port(), ["--steps=40", "--checkpoint-every=20", "--sleep-per-step=0.01"], resume);
    const exits = await Promise.all(dirs.map((d) => waitFor("exit", () => exitOf(d), 45_000, dump(dirs))));
    for (const [i, d] of dirs.entries()) {
      expect(exits[i], dump(dirs)()).toMatchObject({ status: "succeeded" });
      expect(events(d).find((e) => e["type"] === "checkpoint-restored")).toMatchObject({ name: "step-00000020", step: 20, fromRunId: first.runId });
      expect(log(d)).toContain("RESUMED_FROM_STEP 20");
      expect(finalStep(log(d))).toEqual({ step: 40, sha: first.sha });
    }
    expect(log(dirs[0]!).match(/^RUNCTL_METRIC /gm)).toHaveLength(20);
  });

  it("a stop on every node (SIGTERM): the ranks agree on a step, rank 0 commits it, both end canceled", async () => {
    const dirs = await both(`mn-stop-${randomBytes(3).toString("hex")}`, port(), ["--steps=100000", "--sleep-per-step=0.05"]);
    await waitFor("rank 0 training", () => /^RUNCTL_METRIC \{"step": 5,/m.test(log(dirs[0]!)), 30_000, dump(dirs));
    const stoppedAt = Date.now();
    await Promise.all(nodes.map((n, i) => run(n, [PY, n.agent, "signal", dirs[i]!, "interrupt"])));
    const exits = await Promise.all(dirs.map((d) => waitFor("exit", () => exitOf(d), GRACE_MS + 10_000, dump(dirs))));
    expect(Date.now() - stoppedAt).toBeLessThan(GRACE_MS + 5_000); // SIGTERM alone ended it: see the signals below
    // torchrun re-raises the SIGTERM after its workers exit 0: exit code 1, the run canceled, not failed.
    for (const e of exits) expect(e, dump(dirs)()).toMatchObject({ status: "canceled", reason: "cancel", exitCode: 1 });
    const [f0, f1] = dirs.map((d) => finalStep(log(d)));
    expect(f1).toEqual(f0);
    expect(log(dirs[0]!)).toContain(`SIGTERM_CHECKPOINT ${f0!.step}`);
    const ck = events(dirs[0]!).filter((e) => e["type"] === "checkpoint");
    expect(ck.map((e) => e["step"])).toEqual([f0!.step]);
    for (const d of dirs) expect(events(d).filter((e) => e["type"] === "signal").map((e) => e["signal"])).toEqual(["SIGTERM"]);
  });

  it("a rank whose trainer dies fails the other rank within seconds, not torch's timeouts", async () => {
    const tag = `--seed=${1000 + Math.floor(Math.random() * 1000)}`;
    const dirs = await both(`mn-die-${randomBytes(3).toString("hex")}`, port(), ["--steps=100000", "--sleep-per-step=0.05", tag]);
    await waitFor("rank 0 training", () => /^RUNCTL_METRIC \{"step": 5,/m.test(log(dirs[0]!)), 30_000, dump(dirs));
    const workers = await hostPids(nodes[1]!.host, isWorker(tag));
    expect(workers, "one worker process on rank 1").toHaveLength(1);
    const killedAt = Date.now();
    process.kill(workers[0]!, "SIGKILL");
    const [e0, e1] = await Promise.all(dirs.map((d) => waitFor("exit", () => exitOf(d), GRACE_MS + 10_000, dump(dirs))));
    const tookMs = Date.now() - killedAt;
    expect(e1, dump(dirs)()).toMatchObject({ status: "failed", reason: "exit" });
    expect(e0, dump(dirs)()).toMatchObject({ status: "failed", reason: "exit" });
    expect(tookMs).toBeLessThan(GRACE_MS + 5_000);
    expect(log(dirs[0]!)).toMatch(/Connection closed by peer|Connection reset by peer/);
    expect(log(dirs[0]!)).not.toMatch(/^FINAL_STEP/m);
    for (const n of nodes) expect(await hostPids(n.host, (cmd) => cmd.includes(tag))).toEqual([]);
  });

  it("a node that vanishes leaves rank 0's torchrun waiting; a stop ends it within graceMs", async () => {
    const tag = `--seed=${2000 + Math.floor(Math.random() * 1000)}`;
    const dirs = await both(`mn-lost-${randomBytes(3).toString("hex")}`, port(), ["--steps=100000", "--sleep-per-step=0.05", tag]);
    await waitFor("rank 0 training", () => /^RUNCTL_METRIC \{"step": 5,/m.test(log(dirs[0]!)), 30_000, dump(dirs));
    await nodes[1]!.host.kill(); // agent, torchrun and worker of rank 1 gone at once, as in a crash
    // Rank 0's worker fails at once, but its torchrun waits in torch's exit barrier (300 s) for a
    // peer that will never come, and runctl's agent cannot know: the run is still alive.
    await waitFor("rank 0's worker to fail", () => /Connection closed by peer|Connection reset by peer/.test(log(dirs[0]!)), 10_000, dump(dirs));
    await sleep(3_000);
    expect(exitOf(dirs[0]!), dump(dirs)()).toBeUndefined();
    // What the client does when a rank is lost: stop the others (SIGTERM, SIGKILL after graceMs).
    const stoppedAt = Date.now();
    await run(nodes[0]!, [PY, nodes[0]!.agent, "signal", dirs[0]!, "interrupt"]);
    const e0 = await waitFor("exit", () => exitOf(dirs[0]!), GRACE_MS + 10_000, dump(dirs));
    expect(Date.now() - stoppedAt).toBeLessThan(GRACE_MS + 5_000);
    expect(e0).toMatchObject({ status: "canceled", reason: "cancel" });
    // torchrun ignores SIGTERM in its exit barrier: the agent's SIGKILL at graceMs is what ends it.
    const signals = events(dirs[0]!).filter((e) => e["type"] === "signal").map((e) => e["signal"]);
    expect(signals).toEqual(["SIGTERM", "SIGKILL"]);
    expect(e0["signal"]).toBe("SIGKILL");
    expect(await hostPids(nodes[0]!.host, (cmd) => cmd.includes(tag))).toEqual([]); // torchrun and its worker
    await nodes[1]!.host.start();
  });
});
