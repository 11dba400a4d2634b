/**
 * Checkpoint integrity under faults, with real agent processes, real trainers and real signals
 * (issue 10, items 1-3; the rules are in docs/checkpoints.md):
 * - an entry still being written when the trainer dies (SIGKILL, non-zero exit) is never committed;
 *   a clean exit 0 after SIGTERM still commits its final, unsettled save;
 * - rewriting a checkpoint under the same name uploads a new generation beside the committed one, so
 *   an agent killed mid-upload leaves the old one committed, verifying, and named by LATEST;
 * - a resume whose listed checkpoint is pruned while it downloads takes the newest complete one.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { checkpointStore } from "../../src/checkpoints/index.js";
import { localDir } from "../../src/storage/local-dir/index.js";
import {
  type AgentEvent,
  cleanUpAgentTests,
  cli,
  committedDir,
  genName,
  type Json,
  launch,
  makeRun,
  type ManifestFile,
  only,
  processGone,
  readEvents,
  readText,
  type Run,
  runToEnd,
  sha256,
  tmp,
  waitFor,
} from "../support/agent-harness.js";

afterAll(() => cleanUpAgentTests());

const MiB = 1024 * 1024;

/** The bytes of a checkpoint payload `tag`: deterministic, so the test can tell which one it got. */
const PAYLOAD_PY = "def payload(tag, mib):\n    s = ('%s:' % tag).encode()\n    return (s * (1048576 // len(s) + 1))[:1048576] * mib\n";
function payload(tag: string, mib: number): Buffer {
  const unit = `${tag}:`;
  const one = Buffer.from(unit.repeat(Math.floor(MiB / unit.length) + 1)).subarray(0, MiB);
  return Buffer.concat(Array.from({ length: mib }, () => one));
}

/**
 * A trainer: commits `ckpt-1` (2 MiB, with a `.done` marker), waits until it is in storage, then
 * writes `ckpt-2/model.bin` in place, 1 MiB every 60 ms up to 50 MiB (the torch.save pattern), and
 * prints how far it got. `after` runs once 11 MiB are written (e.g. a non-zero exit mid-write).
 */
function slowWriter(after: string): string {
  return [
    "import json, os, sys, time",
    PAYLOAD_PY,
    "ck = os.environ['RUNCTL_CHECKPOINT_DIR']",
    "open('trainer.pid', 'w').write(str(os.getpid()))",
    "os.makedirs(os.path.join(ck, 'ckpt-1'))",
    "open(os.path.join(ck, 'ckpt-1', 'model.bin'), 'wb').write(payload('one', 2))",
    "open(os.path.join(ck, 'ckpt-1.done'), 'w').write(json.dumps({'step': 1}))",
    "store = os.path.join(os.environ['STORE'], os.environ['RUNCTL_RUN_ID'], 'LATEST')",
    "while not os.path.exists(store): time.sleep(0.02)",
    "os.makedirs(os.path.join(ck, 'ckpt-2'))",
    "f = open(os.path.join(ck, 'ckpt-2', 'model.bin'), 'wb')",
    "for i in range(50):",
    "    f.write(payload('two', 1)); f.flush()",
    "    print('wrote', i + 1, 'MiB', flush=True)",
    "    if i + 1 == 11:",
    "        " + after,
    "    time.sleep(0.06)",
    "f.close()",
  ].join("\n");
}

/** What every crash case must show: ckpt-2 never committed and named in a warning; ckpt-1 is the latest and verifies. */
async function expectOnlyTheCompleteOne(run: Run, events: AgentEvent[]): Promise<void> {
  expect(statSync(join(run.ckptDir, "ckpt-2", "model.bin")).size).toBeLessThan(50 * MiB);
  expect(events.filter((e) => e.type === "checkpoint").map((e) => e["name"])).toEqual(["ckpt-1"]);
  expect(existsSync(join(run.store, run.runId, "checkpoints", "ckpt-2"))).toBe(false);
  const warning = only(events.filter((e) => e.type === "warning"), "warnings");
  expect(warning).toMatchObject({ checkpoint: "ckpt-2" });
  expect(String(warning["message"])).toMatch(/checkpoint ckpt-2 was not committed: the trainer .* while it was still being written/);
  const store = checkpointStore(localDir(run.store), run.runId);
  expect((await store.list()).map((c) => c.name)).toEqual(["ckpt-1"]);
  const latest = await store.latest();
  expect(latest).toMatchObject({ name: "ckpt-1", step: 1 });
  expect(await latest!.verify()).toEqual({ ok: true, problems: [] });
  const dest = tmp();
  await latest!.download(dest);
  expect(readFileSync(join(dest, "model.bin")).equals(payload("one", 2))).toBe(true);
}

describe.concurrent("a checkpoint being written when the trainer dies is never committed", () => {
  test("SIGKILL after 11 of 50 MiB written in place: no manifest, a warning names it, latest() is the previous one and verifies", async () => {
    const run = makeRun(slowWriter("pass"));
    run.spec["env"] = { STORE: run.store };
    await launch(run);
    await waitFor("11 MiB written", () => readText(join(run.runDir, "train.log")).includes("wrote 11 MiB"), 30_000);
    process.kill(Number(readText(join(run.code, "trainer.pid"))), "SIGKILL");
    const { events, exit } = await runToEnd(run);
    expect(exit).toMatchObject({ status: "failed", reason: "exit", exitCode: null, signal: "SIGKILL" });
    await expectOnlyTheCompleteOne(run, events);
    expect(String(only(events.filter((e) => e.type === "warning"), "warnings")["message"])).toContain("was killed by SIGKILL");
  });

  test("a non-zero exit in the middle of writing: not committed either", async () => {
    const run = makeRun(slowWriter("os._exit(3)"));
    run.spec["env"] = { STORE: run.store };
    await launch(run);
    const { events, exit } = await runToEnd(run);
    expect(exit).toMatchObject({ status: "failed", reason: "exit", exitCode: 3 });
    expect(statSync(join(run.ckptDir, "ckpt-2", "model.bin")).size).toBe(11 * MiB);
    await expectOnlyTheCompleteOne(run, events);
    expect(String(only(events.filter((e) => e.type === "warning"), "warnings")["message"])).toContain("exited with status 3");
  });

  test("cancel with the kill strategy mid-write: not committed, the run is canceled", async () => {
    const run = makeRun(slowWriter("pass"));
    run.spec["env"] = { STORE: run.store };
    await launch(run);
    await waitFor("11 MiB written", () => readText(join(run.runDir, "train.log")).includes("wrote 11 MiB"), 30_000);
    expect((await cli(["signal", run.runDir, "kill"])).code).toBe(0);
    const { events, exit } = await runToEnd(run);
    expect(exit).toMatchObject({ status: "canceled", reason: "kill", signal: "SIGKILL" });
    await expectOnlyTheCompleteOne(run, events);
  });

  test("a fresh .done marker is trusted after a crash; a stale one (older than a rewrite under way) is not", async () => {
    const script = [
      "import os, time",
      PAYLOAD_PY,
      "ck = os.environ['RUNCTL_CHECKPOINT_DIR']",
      // Written and marked, then the trainer dies before any poll could see it settle.
      "open(os.path.join(ck, 'best.pt'), 'wb').write(payload('best', 3))",
      "open(os.path.join(ck, 'best.pt.done'), 'w').write('{\"step\": 5}')",
      // A marker left from an earlier save, then the file is rewritten in place and the trainer dies.
      "open(os.path.join(ck, 'last.pt.done'), 'w').write('{}')",
      "time.sleep(0.05)",
      "f = open(os.path.join(ck, 'last.pt'), 'wb'); f.write(payload('last', 2)); f.flush()",
      "os._exit(1)",
    ].join("\n");
    const run = makeRun(script, {}, undefined, { settleMs: 60_000, pollMs: 5000 });
    await launch(run);
    const { events, exit } = await runToEnd(run);
    expect(exit).toMatchObject({ status: "failed", exitCode: 1 });
    expect(events.filter((e) => e.type === "checkpoint").map((e) => [e["name"], e["step"]])).toEqual([["best.pt", 5]]);
    expect(only(events.filter((e) => e.type === "warning"), "warnings")).toMatchObject({ checkpoint: "last.pt" });
    const latest = await checkpointStore(localDir(run.store), run.runId).latest();
    expect(latest?.name).toBe("best.pt");
    expect(await latest!.verify()).toEqual({ ok: true, problems: [] });
  });

  test("SIGTERM -> the trainer saves 8 MiB in its handler and exits 0: the unsettled final save is committed", async () => {
    const script = [
      "import os, signal, sys, time",
      PAYLOAD_PY,
      "ck = os.environ['RUNCTL_CHECKPOINT_DIR']",
      "def on_term(signum, frame):",
      "    with open(os.path.join(ck, 'final.pt'), 'wb') as f:",
      "        for i in range(8): f.write(payload('final', 1))",
      "    sys.exit(0)",
      "signal.signal(signal.SIGTERM, on_term)",
      "print('ready', flush=True)",
      "while True: time.sleep(0.05)",
    ].join("\n");
    const run = makeRun(script, {}, undefined, { settleMs: 60_000 });
    await launch(run);
    await waitFor("trainer ready", () => readText(join(run.runDir, "train.log")).includes("ready"));
    const agentPid = Number(readText(join(run.runDir, "agent.pid")));
    process.kill(agentPid, "SIGTERM");
    const { events, exit } = await runToEnd(run);
    expect(exit).toMatchObject({ exitCode: 0 });
    expect(events.filter((e) => e.type === "warning")).toEqual([]);
    expect(only(events.filter((e) => e.type === "checkpoint"), "checkpoints")).toMatchObject({ name: "final.pt", bytes: 8 * MiB });
    const latest = await checkpointStore(localDir(run.store), run.runId).latest();
    expect(latest?.name).toBe("final.pt");
    expect(await latest!.verify()).toEqual({ ok: true, problems: [] });
    const dest = tmp();
    expect(readFileSync(await latest!.download(dest)).equals(payload("final", 8))).toBe(true);
  });
});

/** Every file below `dir`, relative, sorted. */
function walk(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const full = join(dir, name);
    if (statSync(full).isDirectory()) out.push(...walk(full).map((p) => `${name}/${p}`));
    else out.push(name);
  }
  return out.sort();
}

describe.concurrent("a rewrite under the same name never takes the committed copy away", () => {
  test("the agent is SIGKILLed while the new version of last.pt uploads: the old one is still committed, verifies, and LATEST names it", async () => {
    const script = [
      "import os, time",
      PAYLOAD_PY,
      "ck = os.environ['RUNCTL_CHECKPOINT_DIR']",
      "open('trainer.pid', 'w').write(str(os.getpid()))",
      "open(os.path.join(ck, 'last.pt'), 'wb').write(payload('v1', 2))",
      "open(os.path.join(ck, 'last.pt.done'), 'w').write('{\"step\": 1}')",
      "while not os.path.exists(os.path.join(os.environ['STORE'], os.environ['RUNCTL_RUN_ID'], 'LATEST')): time.sleep(0.02)",
      // The next epoch overwrites it (marker off while it is rewritten), 100 MiB so that it uploads for a while.
      "os.unlink(os.path.join(ck, 'last.pt.done'))",
      "with open(os.path.join(ck, 'last.pt'), 'wb') as f:",
      "    for i in range(100): f.write(payload('v2', 1))",
      "open(os.path.join(ck, 'last.pt.done'), 'w').write('{\"step\": 2}')",
      "time.sleep(60)",
    ].join("\n");
    const run = makeRun(script, {}, undefined, { settleMs: 60_000, pollMs: 20 });
    run.spec["env"] = { STORE: run.store };
    const agentPid = await launch(run);
    const name = join(run.store, run.runId, "checkpoints", "last.pt");
    await waitFor("the first version committed", () => existsSync(join(run.store, run.runId, "LATEST")), 30_000);
    // The new version's upload is under way: a temporary file of the copy exists in storage.
    await waitFor("the rewrite's upload started", () => walk(name).some((p) => /\.tmp-/.test(p)), 30_000, 2);
    process.kill(agentPid, "SIGKILL");
    await waitFor("the agent gone", () => processGone(agentPid), 5000);
    process.kill(Number(readText(join(run.code, "trainer.pid"))), "SIGKILL");

    expect(readText(join(run.store, run.runId, "LATEST"))).toBe("last.pt");
    const store = checkpointStore(localDir(run.store), run.runId);
    const latest = await store.latest();
    expect(latest).toMatchObject({ name: "last.pt", step: 1, seq: 1 });
    expect(await latest!.verify()).toEqual({ ok: true, problems: [] });
    expect(readFileSync(await latest!.download(tmp())).equals(payload("v1", 2))).toBe(true);
    expect((await store.get("last.pt"))?.seq).toBe(1);
    expect(events(run).filter((e) => e.type === "checkpoint").map((e) => e["commitSeq"])).toEqual([1]);
  });
});

function events(run: Run): AgentEvent[] {
  return readEvents(run.runDir);
}

/** Writes a committed checkpoint by hand in the documented layout (as a previous run would have). */
function commitByHand(store: string, runId: string, name: string, seq: number, files: Record<string, Buffer | "fifo">): string {
  const base = join(store, runId, "checkpoints", name, genName(seq));
  const entries: ManifestFile[] = [];
  for (const [path, data] of Object.entries(files)) {
    const p = join(base, "files", path);
    mkdirSync(dirname(p), { recursive: true });
    if (data === "fifo") {
      // A named pipe: a reader blocks in open() until the test writes the bytes.
      expect(spawnSync("mkfifo", [p]).status).toBe(0);
      const bytes = payload(`${name}/${path}`, 1);
      entries.push({ path, size: bytes.length, sha256: sha256(bytes) });
    } else {
      writeFileSync(p, data);
      entries.push({ path, size: data.length, sha256: sha256(data) });
    }
  }
  const digits = /(\d+)$/.exec(name);
  const manifest = { version: 1, runId, name, kind: "dir", step: digits ? Number(digits[1]) : null, seq, createdAt: new Date().toISOString(), hyperparamsHash: null, files: entries, totalBytes: entries.reduce((a, f) => a + f.size, 0) };
  writeFileSync(join(base, "manifest.json"), JSON.stringify(manifest));
  writeFileSync(join(store, runId, "LATEST"), name);
  return base;
}

describe.concurrent("LATEST follows the order the trainer wrote checkpoints in, not the order commits finished in", () => {
  test("an entry with a .done marker commits before an older one settles: LATEST and latest() take the newer one; retention never prunes it", async () => {
    // a.bin is written first and has no marker (it commits once it settled: 1.5 s); b.bin is written
    // after it with a marker (it commits at once). Found by the torture test over S3.
    const run = makeRun(
      [
        "import json, os, time",
        "ck = os.environ['RUNCTL_CHECKPOINT_DIR']",
        "open(os.path.join(ck, 'a.bin'), 'wb').write(b'a' * 65536)",
        "time.sleep(0.3)",
        "open(os.path.join(ck, 'b.bin'), 'wb').write(b'b' * 65536)",
        "open(os.path.join(ck, 'b.bin.done'), 'w').write(json.dumps({'step': 2}))",
        "time.sleep(4)",
      ].join("\n"),
      {},
      undefined,
      { settleMs: 1500, keep: 1 },
    );
    await launch(run);
    const { events, exit } = await runToEnd(run);
    expect(exit).toMatchObject({ status: "succeeded", exitCode: 0 });
    // b.bin went first, a.bin after it settled; with keep 1 the commit that is not LATEST is pruned.
    expect(events.filter((e) => e.type === "checkpoint").map((e) => e["name"])).toEqual(["b.bin", "a.bin"]);
    expect(readText(join(run.store, run.runId, "LATEST"))).toBe("b.bin");
    const store = checkpointStore(localDir(run.store), run.runId);
    expect((await store.list()).map((c) => c.name)).toEqual(["b.bin"]);
    const latest = await store.latest();
    expect(latest).toMatchObject({ name: "b.bin", step: 2 });
    expect(await latest!.verify()).toEqual({ ok: true, problems: [] });
  });
});

describe.concurrent("retention pruning while a resume downloads is not corruption", () => {
  test("keep 1: the listed checkpoint is pruned mid-download (a newer one committed): the resume restores the newer one", async () => {
    const root = tmp();
    const store = join(root, "store");
    const prev = "prev-run";
    // step-2's first file is a pipe: the restore blocks reading it, after it listed the manifests.
    const old = commitByHand(store, prev, "step-2", 2, { "a.bin": "fifo", "b.bin": payload("b2", 1) });
    const script = [
      "import hashlib, os",
      "p = os.environ['RUNCTL_RESUME_FROM']",
      "print('resumed', os.path.basename(p), hashlib.sha256(open(os.path.join(p, 'w.bin'), 'rb').read()).hexdigest(), flush=True)",
    ].join("\n");
    const run = makeRun(script, { resume: { storage: { kind: "dir", path: store }, runId: prev, name: null } }, root);
    // Opened read-write, the pipe has a writer at once: the agent's read blocks until the bytes come.
    const writer = await open(join(old, "files", "a.bin"), "r+");
    try {
      await launch(run);
      // Its restore staging folder exists once it listed the manifests and started downloading step-2.
      await waitFor("the restore of step-2 started", () => readdirSync(run.ckptDir).some((n) => n.startsWith(".runctl-restore-step-2-")));
      // What retention does meanwhile (keep 1): commit step-3, then delete step-2, manifest first.
      commitByHand(store, prev, "step-3", 3, { "w.bin": payload("w3", 1) });
      rmSync(join(old, "manifest.json"));
      rmSync(join(old, "files", "b.bin"));
      await writer.write(payload("step-2/a.bin", 1));
    } finally {
      await writer.close();
    }
    rmSync(dirname(old), { recursive: true, force: true });

    const { events: evs, exit, log } = await runToEnd(run);
    expect(evs.filter((e) => e.type === "error")).toEqual([]);
    expect(evs.filter((e) => e.type === "warning")).toEqual([]);
    expect(only(evs.filter((e) => e.type === "checkpoint-restored"), "restores")).toMatchObject({ name: "step-3", step: 3, fromRunId: prev });
    expect(log).toContain(`resumed step-3 ${sha256(payload("w3", 1))}`);
    expect(exit).toMatchObject({ status: "succeeded" });
  });

  test("a file really missing from a committed checkpoint still reads as corrupt (falls back, then CHECKPOINT_CORRUPT)", async () => {
    const root = tmp();
    const store = join(root, "store");
    const prev = "prev-broken";
    const base = commitByHand(store, prev, "step-1", 1, { "w.bin": payload("w1", 1) });
    rmSync(join(base, "files", "w.bin"));
    const run = makeRun("print('never')\n", { resume: { storage: { kind: "dir", path: store }, runId: prev, name: null } }, root);
    await launch(run);
    const { events: evs, exit } = await runToEnd(run);
    expect(only(evs.filter((e) => e.type === "error"), "errors")).toMatchObject({ code: "CHECKPOINT_CORRUPT" });
    expect(String(only(evs.filter((e) => e.type === "warning"), "warnings")["message"])).toContain("w.bin is missing");
    expect(exit).toMatchObject({ status: "failed", reason: "resume" });
  });
});
