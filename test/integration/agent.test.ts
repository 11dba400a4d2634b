// Tests of the machine-side agent (the package src/agent/runctl_agent/, run as the built .pyz) through its real command line:
// every test spawns the Python file, launches detached runs in temp folders and checks the files
// and frames it produces against docs/agent-protocol.md.
import { spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join, relative } from "node:path";
import tar from "tar-stream";
import { afterAll, describe, expect, test } from "vitest";
import {
  AGENT,
  AGENT_PACKAGE,
  cleanUpAgentTests,
  cli,
  exitOf,
  eventsOf,
  follow,
  type Frame,
  type Json,
  launch,
  makeRun,
  type Manifest,
  type ManifestFile,
  manifestOf,
  committedDir,
  genName,
  only,
  processGone,
  PY,
  readText,
  type Run,
  runToEnd,
  sha256,
  SYSTEM_PY,
  tmp,
  trackLaunched,
  waitFor,
} from "../support/agent-harness.js";

afterAll(() => cleanUpAgentTests());

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const obj = value as Record<string, unknown>;
    return `{${Object.keys(obj)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(obj[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(value);
}

function logLines(frames: Frame[]): string[] {
  return frames.filter((f) => f.k === "log").map((f) => f.l ?? "");
}

/** Files below dir (relative, "/"-separated). */
function walk(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const full = join(dir, name);
    if (lstatSync(full).isDirectory()) out.push(...walk(full).map((p) => `${name}/${p}`));
    else out.push(name);
  }
  return out.sort();
}

/**
 * Samples storage while a run commits: LATEST must always name a checkpoint whose manifest exists,
 * and every manifest must describe files that are already there (manifest written last, deleted first).
 */
function storageSampler(store: string, runId: string, checkLatest: boolean): { stop: () => string[] } {
  const violations: string[] = [];
  const ckRoot = join(store, runId, "checkpoints");
  const timer = setInterval(() => {
    try {
      if (checkLatest) {
        const latest = readText(join(store, runId, "LATEST")).trim();
        if (latest && committedDir(store, runId, latest) === undefined && readText(join(store, runId, "LATEST")).trim() === latest) {
          violations.push(`LATEST=${latest} without a manifest`);
        }
      }
      for (const name of existsSync(ckRoot) ? readdirSync(ckRoot) : []) {
        for (const gen of readdirSync(join(ckRoot, name))) {
          const mpath = join(ckRoot, name, gen, "manifest.json");
          const raw = readText(mpath);
          if (!raw) continue;
          const m = JSON.parse(raw) as Manifest;
          if (genName(m.seq) !== gen) violations.push(`${name}/${gen}: manifest says seq ${m.seq}`);
          for (const f of m.files) {
            const p = join(ckRoot, name, gen, "files", f.path);
            const ok = existsSync(p) && statSync(p).size === f.size;
            if (!ok && readText(mpath) === raw) violations.push(`${name}/${gen}: manifest lists ${f.path} which is not stored`);
          }
        }
      }
    } catch {
      // a file vanished between two calls: retention at work, not a violation
    }
  }, 3);
  return {
    stop: () => {
      clearInterval(timer);
      return violations;
    },
  };
}

/** Writes a committed checkpoint by hand, in the documented layout (as another run would have). */
function commitByHand(store: string, runId: string, name: string, seq: number, files: Record<string, Buffer>, kind: "dir" | "file" = "dir"): void {
  const base = join(store, runId, "checkpoints", name, genName(seq));
  const entries: ManifestFile[] = [];
  for (const [path, data] of Object.entries(files)) {
    const p = join(base, "files", path);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, data);
    entries.push({ path, size: data.length, sha256: sha256(data) });
  }
  const digits = name.match(/\d+/g);
  const manifest = {
    version: 1,
    runId,
    name,
    kind,
    step: digits ? Number(digits[digits.length - 1]) : null,
    seq,
    createdAt: new Date().toISOString(),
    hyperparamsHash: sha256("{}"),
    files: entries,
    totalBytes: entries.reduce((a, f) => a + f.size, 0),
  };
  writeFileSync(join(base, "manifest.json"), JSON.stringify(manifest));
  writeFileSync(join(store, runId, "LATEST"), name);
}

function makeTar(entries: Array<{ name: string; data?: string | Buffer; mode?: number; type?: "file" | "directory" | "symlink" | "link"; linkname?: string }>): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) {
    const type = e.type ?? "file";
    if (type === "file") {
      const data = Buffer.from(e.data ?? "");
      pack.entry({ name: e.name, size: data.length, mode: e.mode ?? 0o644, type }, data);
    } else {
      pack.entry({ name: e.name, type, mode: e.mode ?? 0o755, ...(e.linkname ? { linkname: e.linkname } : {}) });
    }
  }
  pack.finalize();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    pack.on("data", (c: unknown) => {
      chunks.push(c as Buffer);
    });
    pack.on("end", () => resolve(Buffer.concat(chunks)));
    pack.on("error", reject);
  });
}

function control(expectFiles: Record<string, { size: number; mode: number; sha256: string }>, del: string[] = []): { name: string; data: string } {
  return { name: ".runctl-sync/control.json", data: JSON.stringify({ delete: del, expect: expectFiles }) };
}

function info(data: string, mode = 0o644): { size: number; mode: number; sha256: string } {
  return { size: Buffer.byteLength(data), mode, sha256: sha256(data) };
}

// ---------------------------------------------------------------------------------------------

const interpreters = [PY, ...(existsSync(SYSTEM_PY) ? [SYSTEM_PY] : [])];

describe.concurrent("agent runs", () => {
  test.each(interpreters)("launch + follow with %s: log lines with byte offsets, env, exit event", async (python) => {
    const script = [
      "import os, sys",
      "print('line one')",
      "print('caf\\u00e9 \\u2713')",
      "print('env', os.environ['RUNCTL_RUN_ID'], os.environ['RUNCTL_NODE_RANK'], os.environ['RUNCTL_NUM_NODES'], os.environ['PYTHONUNBUFFERED'])",
      "print('hp', os.environ['RUNCTL_HPARAMS'])",
      "print('user', os.environ['MY_VAR'], 'RUNCTL_DATA_DIR' in os.environ, 'RUNCTL_RESUME_FROM' in os.environ)",
      "print('dirs', os.environ['RUNCTL_CHECKPOINT_DIR'] == os.path.join(os.environ['RUN_DIR'], 'checkpoints'), os.path.isdir(os.environ['RUNCTL_OUTPUT_DIR']), os.getcwd() == os.environ['CODE_DIR'])",
      "print('args', sys.argv[1:])",
      "print('to stderr', file=sys.stderr)",
      "sys.stdout.write('no newline at end')",
    ].join("\n");
    const root = tmp();
    const run = makeRun(script, {}, root);
    run.spec["python"] = python;
    run.spec["argv"] = ["train.py", "--lr", "0.001"];
    run.spec["hyperparams"] = { lr: 0.001 };
    run.spec["env"] = { MY_VAR: "hello world", RUN_DIR: run.runDir, CODE_DIR: run.code };
    await launch(run, { python });
    const { frames, events, exit } = await runToEnd(run);

    expect(logLines(frames)).toEqual([
      "line one",
      "caf\u00e9 \u2713",
      `env ${run.runId} 0 1 1`,
      'hp {"lr":0.001}',
      "user hello world False False",
      "dirs True True True",
      "args ['--lr', '0.001']",
      "to stderr",
      "no newline at end",
    ]);
    // `o` is the byte offset just past each line (UTF-8 bytes, not characters); the last is unterminated.
    const logBytes = readFileSync(join(run.runDir, "train.log"));
    const logFrames = frames.filter((f) => f.k === "log");
    let offset = 0;
    for (const f of logFrames) {
      const nl = logBytes.indexOf(0x0a, offset);
      offset = nl === -1 ? logBytes.length : nl + 1;
      expect(f.o).toBe(offset);
    }
    expect(offset).toBe(logBytes.length);
    // Events: byte offsets too, and the exit event is last.
    const evBytes = readFileSync(join(run.runDir, "events.jsonl"));
    const evFrames = frames.filter((f) => f.k === "ev");
    expect(evFrames[evFrames.length - 1]?.o).toBe(evBytes.length);
    expect(events.filter((e) => e.type === "phase").map((e) => e.phase)).toEqual(["training", "teardown"]);
    expect(exit).toMatchObject({ type: "exit", status: "succeeded", exitCode: 0, signal: null, reason: "exit" });
    expect(typeof exit["durationMs"]).toBe("number");
    expect(readText(join(run.runDir, "exit_code")).trim()).toBe("0");

    // Reconnecting from a cursor repeats nothing: from after line 2 and event 1.
    const second = await follow(run.runDir, logFrames[1]?.o ?? -1, evFrames[0]?.o ?? -1, python);
    expect(second.code).toBe(0);
    expect(logLines(second.frames)).toEqual(logLines(frames).slice(2));
    expect(eventsOf(second.frames).map((e) => e.seq)).toEqual(events.slice(1).map((e) => e.seq));

    const status = await cli(["status", run.runDir], undefined, python);
    expect(status.code).toBe(0);
    expect(status.json).toMatchObject({ alive: false, phase: "done", exit: { type: "exit", status: "succeeded" }, exitCode: 0 });
    const statusFile = JSON.parse(readText(join(run.runDir, "status.json"))) as Json;
    expect(statusFile).toMatchObject({ phase: "done" });
    expect(typeof statusFile["agentPid"]).toBe("number");
    expect(typeof statusFile["trainerPid"]).toBe("number");
    expect(typeof statusFile["heartbeatMs"]).toBe("number");
    expect(JSON.parse(readText(join(run.runDir, "spec.json")))).toEqual(run.spec);
  });

  test("a non-zero exit code fails the run and is recorded", async () => {
    const run = makeRun("import sys\nprint('failing now')\nsys.exit(3)\n");
    await launch(run);
    const { exit, log } = await runToEnd(run);
    expect(exit).toMatchObject({ status: "failed", exitCode: 3, signal: null, reason: "exit" });
    expect(readText(join(run.runDir, "exit_code")).trim()).toBe("3");
    expect(log).toContain("failing now");
  });

  test("the run survives its launcher's whole process group being killed; a second launch is refused", async () => {
    // Silent until the test says so (a `go` file): heartbeat frames come after 2 s of silence, and
    // the run must still be live for the second launch however loaded the machine is (a fixed
    // 10 s sleep was once over before it in CI).
    const run = makeRun("import os, time\nfor _ in range(1200):\n    if os.path.exists('go'): break\n    time.sleep(0.05)\nprint('still here')\n");
    trackLaunched(run.runDir);
    const specFile = join(run.root, "spec-in.json");
    writeFileSync(specFile, JSON.stringify(run.spec));
    // Like an SSH session: the launcher's shell keeps running after `launch` until it is killed.
    const launcher = spawn("sh", ["-c", `"${PY}" "${AGENT}" launch "${run.runDir}" < "${specFile}"; sleep 60`], { detached: true });
    let out = "";
    launcher.stdout.on("data", (d: Buffer) => (out += d.toString("utf8")));
    await waitFor("launch output", () => out.includes('"pid"'));
    const agentPid = (JSON.parse(out.trim()) as { pid: number }).pid;
    const pgid = launcher.pid as number;
    process.kill(-pgid, "SIGHUP");
    process.kill(-pgid, "SIGKILL");
    await waitFor("launcher gone", () => launcher.exitCode !== null || launcher.signalCode !== null);
    // Following from now on: seconds of silence from the trainer must bring heartbeat frames.
    const following = follow(run.runDir);

    // The agent is in its own session, not the launcher's, and it is still alive.
    if (processGone(agentPid)) throw new Error(`agent died: ${readText(join(run.runDir, "agent.log"))} ${readText(join(run.runDir, "events.jsonl"))}`);
    const stat = readFileSync(`/proc/${agentPid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    expect(Number(fields[2])).not.toBe(pgid); // process group
    expect(Number(fields[3])).not.toBe(pgid); // session
    expect(processGone(agentPid)).toBe(false);

    const again = await cli(["launch", run.runDir], JSON.stringify(run.spec));
    expect(again.code).toBe(3);
    expect(again.json["pid"]).toBe(agentPid);

    // status.json is a heartbeat: rewritten every second while the run lives.
    const beat = (): number => (JSON.parse(readText(join(run.runDir, "status.json"))) as { heartbeatMs: number }).heartbeatMs;
    const firstBeat = beat();
    await waitFor("a newer heartbeat", () => beat() > firstBeat, 3000);
    // Seconds more of silence while the follower runs, then the trainer may finish.
    await new Promise((resolve) => setTimeout(resolve, 5000));
    writeFileSync(join(run.code, "go"), "");

    const { code, frames } = await following;
    expect(code).toBe(0);
    expect(logLines(frames)).toEqual(["still here"]);
    expect(exitOf(frames)).toMatchObject({ status: "succeeded", exitCode: 0 });
    expect(frames.some((f) => f.k === "hb" && f.phase === "training" && typeof f.t === "number")).toBe(true);
  });

  test("interrupt: the trainer gets SIGTERM, saves a checkpoint, it is committed, the run is canceled", async () => {
    const script = [
      "import json, os, signal, sys, time",
      "ck = os.environ['RUNCTL_CHECKPOINT_DIR']",
      "def on_term(signum, frame):",
      "    print('got SIGTERM', flush=True)",
      "    d = os.path.join(ck, 'step-00000007')",
      "    os.makedirs(d)",
      "    with open(os.path.join(d, 'state.json'), 'w') as f: json.dump({'step': 7}, f)",
      "    sys.exit(0)",
      "signal.signal(signal.SIGTERM, on_term)",
      "print('ready', flush=True)",
      "while True: time.sleep(0.05)",
    ].join("\n");
    // settleMs is long: only the final pass after the trainer exits can commit the checkpoint.
    const run = makeRun(script, {});
    (run.spec["checkpoints"] as Json)["settleMs"] = 60_000;
    await launch(run);
    await waitFor("trainer ready", () => readText(join(run.runDir, "train.log")).includes("ready"));
    const sig = await cli(["signal", run.runDir, "interrupt"]);
    expect(sig.code).toBe(0);
    expect(sig.json).toMatchObject({ ok: true, signal: "SIGTERM" });

    const { events, exit, log } = await runToEnd(run);
    expect(log).toContain("got SIGTERM");
    expect(only(events.filter((e) => e.type === "signal"), "signal events")).toMatchObject({ signal: "SIGTERM", reason: "cancel" });
    const ck = only(events.filter((e) => e.type === "checkpoint"), "checkpoint events");
    expect(ck).toMatchObject({ name: "step-00000007", step: 7, commitSeq: 1, files: 1 });
    expect(events.findIndex((e) => e.type === "checkpoint")).toBeGreaterThan(events.findIndex((e) => e.type === "phase" && e["phase"] === "teardown"));
    expect(exit).toMatchObject({ status: "canceled", exitCode: 0, reason: "cancel" });
    const m = manifestOf(run.store, run.runId, "step-00000007");
    const stored = readFileSync(join(committedDir(run.store, run.runId, "step-00000007")!, "files", "state.json"));
    expect(m.files).toEqual([{ path: "state.json", size: stored.length, sha256: sha256(stored) }]);
    expect(stored.toString()).toBe('{"step": 7}');

    const late = await cli(["signal", run.runDir, "interrupt"]);
    expect(late.code).toBe(3);
  });

  test("kill: SIGKILL to the whole process group at once, including the trainer's children", async () => {
    const script = [
      "import os, signal, subprocess, time",
      "signal.signal(signal.SIGTERM, signal.SIG_IGN)",
      "child = subprocess.Popen(['sleep', '300'])",
      "open('child.pid', 'w').write(str(child.pid))",
      "print('ready', flush=True)",
      "while True: time.sleep(0.05)",
    ].join("\n");
    // A grace period far beyond the test's own timeout: a kill that waited for it could not pass.
    const run = makeRun(script, { limits: { maxDurationMs: null, graceMs: 3_600_000 } });
    await launch(run);
    await waitFor("trainer ready", () => readText(join(run.runDir, "train.log")).includes("ready"));
    const childPid = Number(readText(join(run.code, "child.pid")));
    expect(processGone(childPid)).toBe(false);
    const sig = await cli(["signal", run.runDir, "kill"]);
    expect(sig.code).toBe(0);
    const { events, exit } = await runToEnd(run);
    expect(only(events.filter((e) => e.type === "signal"), "signal events")).toMatchObject({ signal: "SIGKILL", reason: "kill" });
    expect(exit).toMatchObject({ status: "canceled", exitCode: null, signal: "SIGKILL", reason: "kill" });
    expect(readText(join(run.runDir, "exit_code")).trim()).toBe("137");
    await waitFor("trainer's child killed", () => processGone(childPid), 5000);
  });

  test("max duration: SIGTERM, then SIGKILL after graceMs when ignored; the run fails", async () => {
    const script = [
      "import signal, time",
      "signal.signal(signal.SIGTERM, lambda s, f: print('term ignored', flush=True))",
      "print('ready', flush=True)",
      "while True: time.sleep(0.05)",
    ].join("\n");
    const run = makeRun(script, { limits: { maxDurationMs: 1000, graceMs: 700 } });
    await launch(run);
    const { events, exit, log } = await runToEnd(run);
    expect(log).toContain("term ignored");
    expect(events.filter((e) => e.type === "signal").map((e) => [e["signal"], e["reason"]])).toEqual([
      ["SIGTERM", "max-duration"],
      ["SIGKILL", "max-duration"],
    ]);
    expect(exit).toMatchObject({ status: "failed", exitCode: null, signal: "SIGKILL", reason: "max-duration" });
    expect(exit["durationMs"] as number).toBeGreaterThanOrEqual(1700);
  });

  test("a missing script fails with SCRIPT_NOT_FOUND before training", async () => {
    const run = makeRun("print('unused')\n", { argv: ["nope.py"] });
    await launch(run);
    const { events, exit } = await runToEnd(run);
    expect(only(events.filter((e) => e.type === "error"), "errors")).toMatchObject({ code: "SCRIPT_NOT_FOUND" });
    expect(String(events.find((e) => e.type === "error")?.["message"])).toContain("nope.py");
    expect(events.some((e) => e.type === "phase" && e["phase"] === "training")).toBe(false);
    expect(exit).toMatchObject({ status: "failed", exitCode: null, reason: "script" });
  });

  test("data: dir sources (tree and file) are copied; a missing source fails with DATA_FAILED", async () => {
    const root = tmp();
    const dataset = join(root, "dataset");
    mkdirSync(join(dataset, "split"), { recursive: true });
    writeFileSync(join(dataset, "split", "a.csv"), "1,2,3\n");
    writeFileSync(join(root, "labels.txt"), "cat\ndog\n");
    const script = [
      "import os",
      "d = os.environ['RUNCTL_DATA_DIR']",
      "print('a', open(os.path.join(d, 'split', 'a.csv')).read().strip())",
      "print('labels', open(os.path.join(d, 'labels.txt')).read().split())",
    ].join("\n");
    const run = makeRun(script, {}, root);
    const dataDir = join(run.code, "data");
    run.spec["data"] = [
      { source: { kind: "dir", path: dataset }, to: dataDir },
      { source: { kind: "dir", path: join(root, "labels.txt") }, to: join(dataDir, "labels.txt") },
    ];
    run.spec["dataDir"] = dataDir;
    const bad = makeRun("print('unused')\n", { data: [{ source: { kind: "dir", path: join(root, "missing") }, to: join(root, "x") }] });
    await launch(run);
    await launch(bad);
    const [good, failed] = await Promise.all([runToEnd(run), runToEnd(bad)]);
    expect(good.exit).toMatchObject({ status: "succeeded" });
    expect(good.log).toContain("a 1,2,3");
    expect(good.log).toContain("labels ['cat', 'dog']");
    expect(good.events.filter((e) => e.type === "phase").map((e) => e["phase"])).toEqual(["data", "training", "teardown"]);
    expect(only(failed.events.filter((e) => e.type === "error"), "errors")).toMatchObject({ code: "DATA_FAILED" });
    expect(failed.exit).toMatchObject({ status: "failed", reason: "data" });
  });

  test("follow reports lost (exit 5) when the agent dies without an exit record", async () => {
    const run = makeRun("import time\nprint('ready', flush=True)\ntime.sleep(60)\n");
    const agentPid = await launch(run);
    await waitFor("trainer ready", () => readText(join(run.runDir, "train.log")).includes("ready"));
    await waitFor("trainer pid", () => typeof (JSON.parse(readText(join(run.runDir, "status.json")) || "{}") as Json)["trainerPid"] === "number");
    const trainerPid = (JSON.parse(readText(join(run.runDir, "status.json"))) as Json)["trainerPid"] as number;
    process.kill(agentPid, "SIGKILL");
    process.kill(-trainerPid, "SIGKILL");
    const { code, frames } = await follow(run.runDir);
    expect(code).toBe(5);
    expect(frames[frames.length - 1]).toMatchObject({ k: "lost" });
    expect(logLines(frames)).toEqual(["ready"]);
    const status = await cli(["status", run.runDir]);
    expect(status.json).toMatchObject({ alive: false, exit: null });
    expect((await cli(["signal", run.runDir, "kill"])).code).toBe(3);
  });
});

describe.concurrent("agent checkpoints", () => {
  test("commits: manifests verify byte for byte, steps, seq, retention keep, LATEST only after the manifest", async () => {
    const script = [
      "import json, os, time",
      "ck = os.environ['RUNCTL_CHECKPOINT_DIR']",
      "for i in range(1, 5):",
      "    d = os.path.join(ck, 'step-%08d' % i)",
      "    os.makedirs(os.path.join(d, 'sub'))",
      "    with open(os.path.join(d, 'model.bin'), 'wb') as f: f.write(os.urandom(2000000 + i))",
      "    with open(os.path.join(d, 'sub', 'meta.json'), 'w') as f: json.dump({'i': i}, f)",
      "    with open(d + '.done', 'w') as f: json.dump({'step': i * 100}, f)",
      "    time.sleep(0.4)",
      "with open(os.path.join(ck, 'last.pt'), 'wb') as f: f.write(os.urandom(12345))",
      "with open(os.path.join(ck, '.hidden'), 'w') as f: f.write('x')",
      "with open(os.path.join(ck, 'partial.tmp'), 'w') as f: f.write('x')",
      "print('done', flush=True)",
    ].join("\n");
    const hyperparams = { lr: 0.001, layers: [64, 32], name: "mlp" };
    const run = makeRun(script, { hyperparams });
    run.spec["checkpoints"] = { dir: run.ckptDir, storage: { kind: "dir", path: run.store }, keep: 2, settleMs: 30_000, pollMs: 50 };
    const sampler = storageSampler(run.store, run.runId, true);
    await launch(run);
    const { events, exit } = await runToEnd(run);
    expect(sampler.stop()).toEqual([]);
    expect(exit).toMatchObject({ status: "succeeded" });

    const commits = events.filter((e) => e.type === "checkpoint");
    expect(commits.map((e) => e["name"])).toEqual(["step-00000001", "step-00000002", "step-00000003", "step-00000004", "last.pt"]);
    expect(commits.map((e) => e["commitSeq"])).toEqual([1, 2, 3, 4, 5]);
    expect(commits.map((e) => e["step"])).toEqual([100, 200, 300, 400, null]);
    expect(commits[0]).toMatchObject({ files: 2, bytes: 2000001 + 8, location: join(run.store, run.runId, "checkpoints", "step-00000001", "g00000001") });

    // Retention (keep 2): only the two newest remain, manifests and files.
    const ckRoot = join(run.store, run.runId, "checkpoints");
    expect(readdirSync(ckRoot).sort()).toEqual(["last.pt", "step-00000004"]);
    expect(readdirSync(join(ckRoot, "last.pt"))).toEqual(["g00000005"]);
    expect(readdirSync(join(ckRoot, "step-00000004"))).toEqual(["g00000004"]);
    expect(readText(join(run.store, run.runId, "LATEST")).trim()).toBe("last.pt");
    expect(walk(join(run.store, run.runId)).filter((p) => p.includes(".tmp"))).toEqual([]);

    const hpHash = sha256(canonical(hyperparams));
    for (const name of ["step-00000004", "last.pt"]) {
      const m = manifestOf(run.store, run.runId, name);
      expect(m).toMatchObject({ version: 1, runId: run.runId, name, hyperparamsHash: hpHash });
      expect(Number.isNaN(Date.parse(m.createdAt))).toBe(false);
      expect(m.totalBytes).toBe(m.files.reduce((a, f) => a + f.size, 0));
      const gen = committedDir(run.store, run.runId, name)!;
      expect(m.files.map((f) => f.path)).toEqual(walk(join(gen, "files")));
      for (const f of m.files) {
        const stored = readFileSync(join(gen, "files", f.path));
        const local = readFileSync(m.kind === "file" ? join(run.ckptDir, name) : join(run.ckptDir, name, f.path));
        expect(sha256(stored)).toBe(f.sha256);
        expect(stored.length).toBe(f.size);
        expect(stored.equals(local)).toBe(true);
      }
    }
    expect(manifestOf(run.store, run.runId, "step-00000004")).toMatchObject({ kind: "dir", step: 400, seq: 4 });
    expect(manifestOf(run.store, run.runId, "step-00000004").files.map((f) => f.path)).toEqual(["model.bin", "sub/meta.json"]);
    expect(manifestOf(run.store, run.runId, "last.pt")).toMatchObject({ kind: "file", step: null, seq: 5, files: [{ path: "last.pt", size: 12345 }] });
  });

  test("a committed checkpoint whose content changes is recommitted as a new generation; the old one goes after", async () => {
    const script = [
      "import json, os, time",
      "ck = os.environ['RUNCTL_CHECKPOINT_DIR']",
      "d = os.path.join(ck, 'best')",
      "os.makedirs(d)",
      "open(os.path.join(d, 'a.txt'), 'w').write('v1')",
      "open(os.path.join(d, 'b.txt'), 'w').write('bee')",
      "open(d + '.done', 'w').write('{\"step\": 1}')",
      "manifest = os.path.join(os.environ['STORE'], os.environ['RUNCTL_RUN_ID'], 'checkpoints', 'best', 'g00000001', 'manifest.json')",
      "while not os.path.exists(manifest): time.sleep(0.02)",
      "os.unlink(d + '.done')",
      "os.unlink(os.path.join(d, 'b.txt'))",
      "open(os.path.join(d, 'a.txt'), 'w').write('version two')",
      "open(d + '.done', 'w').write('{\"step\": 2}')",
      "time.sleep(1.0)",
    ].join("\n");
    const run = makeRun(script);
    run.spec["env"] = { STORE: run.store };
    run.spec["checkpoints"] = { dir: run.ckptDir, storage: { kind: "dir", path: run.store }, keep: null, settleMs: 30_000, pollMs: 50 };
    const sampler = storageSampler(run.store, run.runId, false);
    await launch(run);
    const { events, exit } = await runToEnd(run);
    expect(sampler.stop()).toEqual([]);
    expect(exit).toMatchObject({ status: "succeeded" });
    const commits = events.filter((e) => e.type === "checkpoint");
    expect(commits.map((e) => [e["name"], e["commitSeq"], e["step"], e["files"]])).toEqual([
      ["best", 1, 1, 2],
      ["best", 2, 2, 1],
    ]);
    const m = manifestOf(run.store, run.runId, "best");
    expect(m).toMatchObject({ seq: 2, step: 2, files: [{ path: "a.txt", size: 11, sha256: sha256("version two") }] });
    expect(walk(join(run.store, run.runId, "checkpoints", "best"))).toEqual(["g00000002/files/a.txt", "g00000002/manifest.json"]);
  });

  test("a commit that keeps failing is retried, then reported as one warning; the run goes on", async () => {
    const script = [
      "import os, time",
      "ck = os.environ['RUNCTL_CHECKPOINT_DIR']",
      "open(os.path.join(ck, 'ckpt-1'), 'w').write('weights')",
      "open(os.path.join(ck, 'ckpt-1.done'), 'w').write('{}')",
      "time.sleep(2.5)",
      "print('trained', flush=True)",
    ].join("\n");
    const run = makeRun(script);
    // A storage root below a regular file: every write fails.
    const blocker = join(run.root, "not-a-folder");
    writeFileSync(blocker, "x");
    run.spec["checkpoints"] = { dir: run.ckptDir, storage: { kind: "dir", path: join(blocker, "store") }, keep: null, settleMs: 100, pollMs: 50 };
    await launch(run);
    const { events, exit, log } = await runToEnd(run);
    const warning = only(events.filter((e) => e.type === "warning"), "warnings");
    expect(String(warning["message"])).toMatch(/ckpt-1 was not committed after 3 tries/);
    expect(events.filter((e) => e.type === "checkpoint")).toEqual([]);
    expect(log).toContain("trained");
    expect(exit).toMatchObject({ status: "succeeded", exitCode: 0 });
  });

  test("resume: falls back past a corrupt LATEST, restores a verified one, never recommits it; named/missing/file cases", async () => {
    const root = tmp();
    const store = join(root, "store");
    const prev = "prev-run";
    const weights = (n: number): Buffer => Buffer.from(`weights of step ${n}\n`.repeat(50));
    commitByHand(store, prev, "step-00000010", 1, { "weights.bin": weights(10), "opt/state.json": Buffer.from('{"m":1}') });
    commitByHand(store, prev, "step-00000020", 2, { "weights.bin": weights(20), "opt/state.json": Buffer.from('{"m":2}') });
    commitByHand(store, prev, "step-00000030", 3, { "weights.bin": weights(30), "opt/state.json": Buffer.from('{"m":3}') });
    // Same size, different bytes: only the sha256 can tell.
    const corruptPath = join(store, prev, "checkpoints", "step-00000030", genName(3), "files", "weights.bin");
    writeFileSync(corruptPath, weights(31));
    commitByHand(store, "prev-file", "final.pt", 1, { "final.pt": Buffer.from("a single file") }, "file");

    const script = [
      "import hashlib, os, time",
      "p = os.environ['RUNCTL_RESUME_FROM']",
      "if os.path.isdir(p):",
      "    print('resumed', os.path.basename(p), hashlib.sha256(open(os.path.join(p, 'weights.bin'), 'rb').read()).hexdigest())",
      "else:",
      "    print('resumed-file', os.path.basename(p), open(p).read())",
      "time.sleep(0.4)",
    ].join("\n");
    const resume = (runId: string, name: string | null): Json => ({ storage: { kind: "dir", path: store }, runId, name });
    const ckpts = (r: Run): Json => ({ dir: r.ckptDir, storage: { kind: "dir", path: store }, keep: null, settleMs: 100, pollMs: 50 });
    const fallback = makeRun(script, { resume: resume(prev, null) }, root);
    fallback.spec["checkpoints"] = ckpts(fallback);
    const named = makeRun(script, { resume: resume(prev, "step-00000030") }, root);
    const missing = makeRun(script, { resume: resume("no-such-run", null) }, root);
    const file = makeRun(script, { resume: resume("prev-file", "final.pt") }, root);
    file.spec["checkpoints"] = ckpts(file);
    for (const r of [fallback, named, missing, file]) await launch(r);
    const [a, b, c, d] = await Promise.all([fallback, named, missing, file].map((r) => runToEnd(r)));
    if (!a || !b || !c || !d) throw new Error("unreachable");

    const warning = only(a.events.filter((e) => e.type === "warning"), "warnings");
    expect(String(warning["message"])).toContain("step-00000030");
    const restoredPath = join(fallback.ckptDir, "step-00000020");
    expect(only(a.events.filter((e) => e.type === "checkpoint-restored"), "restores")).toMatchObject({ name: "step-00000020", step: 20, path: restoredPath, fromRunId: prev });
    expect(a.log).toContain(`resumed step-00000020 ${sha256(weights(20))}`);
    expect(readFileSync(join(restoredPath, "opt", "state.json"), "utf8")).toBe('{"m":2}');
    expect(a.exit).toMatchObject({ status: "succeeded" });
    // settleMs 100 and the run lasted longer: the restored entry was still not recommitted.
    expect(a.events.filter((e) => e.type === "checkpoint")).toEqual([]);
    expect(existsSync(join(store, fallback.runId))).toBe(false);
    expect(a.events.findIndex((e) => e.type === "checkpoint-restored")).toBeLessThan(a.events.findIndex((e) => e.type === "phase" && e["phase"] === "training"));

    expect(only(b.events.filter((e) => e.type === "error"), "errors")).toMatchObject({ code: "CHECKPOINT_CORRUPT" });
    expect(b.exit).toMatchObject({ status: "failed", reason: "resume" });
    expect(b.events.some((e) => e.type === "phase" && e["phase"] === "training")).toBe(false);

    expect(only(c.events.filter((e) => e.type === "error"), "errors")).toMatchObject({ code: "CHECKPOINT_NOT_FOUND" });
    expect(c.exit).toMatchObject({ status: "failed", reason: "resume" });

    expect(d.log).toContain("resumed-file final.pt a single file");
    expect(only(d.events.filter((e) => e.type === "checkpoint-restored"), "restores")).toMatchObject({ name: "final.pt", path: join(file.ckptDir, "final.pt") });
    expect(d.events.filter((e) => e.type === "checkpoint")).toEqual([]);
  });
});

describe.concurrent("agent sync", () => {
  test("manifest: regular files with size/mode/sha256, hashes cached by path+size+mtime", async () => {
    const root = tmp();
    const dir = join(root, "tree");
    mkdirSync(join(dir, "sub"), { recursive: true });
    writeFileSync(join(dir, "a.txt"), "alpha");
    writeFileSync(join(dir, "sub", "run.sh"), "#!/bin/sh\n");
    chmodSync(join(dir, "sub", "run.sh"), 0o755);
    symlinkSync("a.txt", join(dir, "link"));
    const r = await cli(["manifest", dir]);
    expect(r.code).toBe(0);
    expect(r.json).toEqual({
      files: {
        "a.txt": { size: 5, mode: 0o644, sha256: sha256("alpha") },
        "sub/run.sh": { size: 10, mode: 0o755, sha256: sha256("#!/bin/sh\n") },
      },
    });
    const cachePath = join(root, ".tree.hashcache.json");
    expect(existsSync(cachePath)).toBe(true);
    // Tamper with the cached hash: an unchanged file (same size and mtime) is not re-read.
    // Version 2 entries: [size, "mtime_ns", "ctime_ns", sha256].
    const cache = JSON.parse(readFileSync(cachePath, "utf8")) as { version: number; entries: Record<string, [number, string, string, string]> };
    expect(cache.version).toBe(2);
    const entry = cache.entries["a.txt"];
    if (!entry) throw new Error("a.txt not cached");
    expect([entry[0], entry[3]]).toEqual([5, sha256("alpha")]);
    entry[3] = "0".repeat(64);
    writeFileSync(cachePath, JSON.stringify(cache));
    expect(((await cli(["manifest", dir])).json["files"] as Record<string, Json>)["a.txt"]?.["sha256"]).toBe("0".repeat(64));
    // A new mtime invalidates the entry.
    utimesSync(join(dir, "a.txt"), new Date(2001, 1, 1), new Date(2001, 1, 1));
    expect(((await cli(["manifest", dir])).json["files"] as Record<string, Json>)["a.txt"]?.["sha256"]).toBe(sha256("alpha"));
    expect((await cli(["manifest", join(root, "missing")])).json).toEqual({ files: {} });
  });

  test("sync-apply: writes atomically with modes, deletes, prunes emptied folders, verifies", async () => {
    const root = tmp();
    const dir = join(root, "code");
    mkdirSync(join(dir, "gone", "deep"), { recursive: true });
    writeFileSync(join(dir, "old.txt"), "old");
    writeFileSync(join(dir, "keep.txt"), "keep");
    writeFileSync(join(dir, "a.txt"), "previous a");
    writeFileSync(join(dir, "gone", "deep", "x.txt"), "x");
    const files = { "a.txt": "new a", "bin/run.sh": "#!/bin/sh\necho hi\n" };
    const expectFiles = { "a.txt": info(files["a.txt"]), "bin/run.sh": info(files["bin/run.sh"], 0o755), "keep.txt": info("keep") };
    const stream = await makeTar([
      control(expectFiles, ["old.txt", "gone/deep/x.txt", "never-existed.txt"]),
      { name: "bin", type: "directory" },
      { name: "a.txt", data: files["a.txt"] },
      { name: "./bin/run.sh", data: files["bin/run.sh"], mode: 0o755 },
    ]);
    const r = await cli(["sync-apply", dir], stream);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.json).toEqual({ ok: true, written: 2, deleted: 2 });
    expect(walk(dir)).toEqual(["a.txt", "bin/run.sh", "keep.txt"]);
    expect(readFileSync(join(dir, "a.txt"), "utf8")).toBe("new a");
    expect(statSync(join(dir, "bin", "run.sh")).mode & 0o777).toBe(0o755);
    expect(existsSync(join(dir, "gone"))).toBe(false);
    // The hashes it verified are what `manifest` reports.
    expect((await cli(["manifest", dir])).json).toEqual({ files: expectFiles });
  });

  test("sync-apply refuses ../, absolute, symlink and hardlink members (exit 7) and writes nothing outside", async () => {
    const root = tmp();
    const outside = join(root, "outside");
    mkdirSync(outside);
    const cases: Array<{ label: string; entry: Parameters<typeof makeTar>[0][number]; escaped: string }> = [
      { label: "dotdot", entry: { name: "../evil", data: "pwned" }, escaped: "evil" },
      { label: "nested dotdot", entry: { name: "ok/../../evil2", data: "pwned" }, escaped: "evil2" },
      { label: "absolute", entry: { name: join(outside, "abs.txt"), data: "pwned" }, escaped: "outside/abs.txt" },
      { label: "symlink", entry: { name: "link", type: "symlink", linkname: join(outside, "target") }, escaped: "outside/target" },
      { label: "hardlink", entry: { name: "hard", type: "link", linkname: "/etc/passwd" }, escaped: "outside/hard" },
    ];
    for (const c of cases) {
      const dir = join(root, "sub", c.label);
      mkdirSync(dir, { recursive: true });
      const stream = await makeTar([control({}), c.entry]);
      const r = await cli(["sync-apply", dir], stream);
      expect(r.code, `${c.label}: ${r.stdout}${r.stderr}`).toBe(7);
      expect(r.json["ok"]).toBe(false);
      expect(readdirSync(dir), c.label).toEqual([]);
      const escapedPath = c.escaped.startsWith("outside/") ? join(root, c.escaped) : join(root, "sub", c.escaped);
      expect(existsSync(escapedPath), c.label).toBe(false);
    }
    // A symlink already inside DIR must not be followed by a later member.
    const dir = join(root, "withlink");
    mkdirSync(dir);
    symlinkSync(outside, join(dir, "out"));
    const r = await cli(["sync-apply", dir], await makeTar([control({}), { name: "out/pwned.txt", data: "pwned" }]));
    expect(r.code).toBe(7);
    expect(readdirSync(outside)).toEqual([]);
  });

  test("sync-apply reports mismatches against expect with exit 6", async () => {
    const dir = join(tmp(), "code");
    mkdirSync(dir);
    writeFileSync(join(dir, "stray.txt"), "not in expect");
    const stream = await makeTar([
      control({ "a.txt": { ...info("aaa"), sha256: sha256("something else") }, "missing.txt": info("m") }),
      { name: "a.txt", data: "aaa" },
    ]);
    const r = await cli(["sync-apply", dir], stream);
    expect(r.code).toBe(6);
    expect(r.json["ok"]).toBe(false);
    const mismatches = r.json["mismatches"] as Array<{ path: string; reason: string }>;
    expect(mismatches.map((m) => m.path)).toEqual(["a.txt", "missing.txt", "stray.txt"]);
    expect(mismatches[0]?.reason).toMatch(/sha256/);
    expect(mismatches[1]?.reason).toBe("missing");
    expect(mismatches[2]?.reason).toBe("unexpected");
  });
});

describe("agent command line", () => {
  test("exit codes: usage 2, no run dir 4, not running 3; the source parses as Python 3.8", async () => {
    const missing = join(tmp(), "nope");
    expect((await cli(["status", missing])).code).toBe(4);
    expect((await cli(["follow", missing])).code).toBe(4);
    expect((await cli(["signal", missing, "kill"])).code).toBe(4);
    expect((await cli([])).code).toBe(2);
    expect((await cli(["bogus"])).code).toBe(2);
    expect((await cli(["follow", missing, "--log-offset"])).code).toBe(2);
    expect((await cli(["signal", missing, "pause"])).code).toBe(2);
    const dir = tmp();
    expect((await cli(["signal", dir, "interrupt"])).code).toBe(3);
    const bad = await cli(["launch", join(dir, "run")], JSON.stringify({ runId: "x", argv: [] }));
    expect(bad.code).toBe(2);
    expect(String(bad.json["error"])).toContain("argv");
    expect(existsSync(join(dir, "run", "agent.pid"))).toBe(false);
    expect((await cli(["launch", join(dir, "run")], "not json")).code).toBe(2);
    // Every module of the built file (what machines run) parses with Python 3.8's grammar.
    const parse = "import ast, sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nfor n in z.namelist(): ast.parse(z.read(n).decode('utf-8'), n, feature_version=(3, 8))\nprint(len(z.namelist()))";
    const grammar = spawnSync(PY, ["-c", parse, AGENT]);
    expect(grammar.status, grammar.stderr.toString()).toBe(0);
    expect(Number(grammar.stdout.toString().trim())).toBe(1 + readdirSync(AGENT_PACKAGE).filter((n) => n.endsWith(".py")).length);
    expect(basename(AGENT)).toMatch(/^runctl_agent-[0-9a-f]{12}\.pyz$/);
  });
});
