/**
 * Supervision (issue 10, items 4, 5, 7): no process of a run outlives it. A trainer that daemonizes
 * a child (double fork + setsid, so the child leaves its process group and session) must lose that
 * child when it exits and on cancel; a SIGKILLed agent must not leave its trainer running (its
 * watcher ends the run, and `reap` does when the watcher is gone too, never touching a process
 * that is not the run's). Events are bounded, so a huge one never makes a finished run look lost.
 * Everything here is real: processes, signals, /proc.
 */
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import {
  cleanUpAgentTests,
  cli,
  follow,
  launch,
  makeRun,
  processGone,
  readText,
  type Json,
  type Run,
  runToEnd,
  sleep,
  tmp,
  waitFor,
  eventsOf,
} from "../support/agent-harness.js";

afterAll(() => cleanUpAgentTests());

/** A trainer that starts a daemon (double fork + setsid; it writes its pid to argv[1]), then sleeps argv[2] seconds. */
const DAEMONIZING = [
  "import os, sys, time",
  "marker, secs = sys.argv[1], float(sys.argv[2])",
  "pid = os.fork()",
  "if pid == 0:",
  "    os.setsid()",
  "    if os.fork():",
  "        os._exit(0)",
  "    with open(marker + '.tmp', 'w') as f:",
  "        f.write(str(os.getpid()))",
  "    os.rename(marker + '.tmp', marker)",
  "    time.sleep(1000)",
  "    os._exit(0)",
  "os.waitpid(pid, 0)",
  "while not os.path.exists(marker):",
  "    time.sleep(0.01)",
  "print('daemon started', flush=True)",
  "time.sleep(secs)",
].join("\n");

function daemonRun(secs: number): { run: Run; marker: string } {
  const marker = join(tmp(), "daemon.pid");
  const run = makeRun(DAEMONIZING, { argv: ["train.py", marker, String(secs)], limits: { maxDurationMs: null, graceMs: 2000 } });
  return { run, marker };
}

async function daemonPid(marker: string): Promise<number> {
  await waitFor("the daemon's pid", () => readText(marker) !== "");
  return Number(readText(marker));
}

async function trainerPid(run: Run): Promise<number> {
  await waitFor("the trainer's pid", () => typeof (JSON.parse(readText(join(run.runDir, "status.json")) || "{}") as Json)["trainerPid"] === "number");
  return (JSON.parse(readText(join(run.runDir, "status.json"))) as Json)["trainerPid"] as number;
}

function supervision(run: Run): Json {
  return JSON.parse(readFileSync(join(run.runDir, "supervision.json"), "utf8")) as Json;
}

/** Kills pid if a test failed before the run's cleanup did (a stray daemon would outlive the suite). */
function killQuietly(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // gone
  }
}

describe.concurrent("agent supervision: every process of the run ends with it", () => {
  test("a daemon that left the trainer's group and session is killed when the trainer exits", async () => {
    const { run, marker } = daemonRun(0.3);
    await launch(run);
    let daemon: number | undefined;
    try {
      daemon = await daemonPid(marker);
      const { exit, log } = await runToEnd(run);
      expect(log).toContain("daemon started");
      expect(exit).toMatchObject({ status: "succeeded", exitCode: 0 });
      // Gone by the time the exit is recorded: killed and reaped (not left a zombie).
      expect(processGone(daemon)).toBe(true);
    } finally {
      killQuietly(daemon);
    }
  });

  test("cancel (interrupt) and kill end the daemon too", async () => {
    for (const how of ["interrupt", "kill"]) {
      const { run, marker } = daemonRun(60);
      await launch(run);
      let daemon: number | undefined;
      try {
        daemon = await daemonPid(marker);
        expect((await cli(["signal", run.runDir, how])).code).toBe(0);
        const { exit } = await runToEnd(run);
        expect(exit).toMatchObject({ status: "canceled", reason: how === "kill" ? "kill" : "cancel" });
        expect(processGone(daemon), how).toBe(true);
      } finally {
        killQuietly(daemon);
      }
    }
  });

  test("the agent reaps the run's orphans it adopts (no zombie left while the trainer runs)", async () => {
    // The daemon exits on its own after 0.2 s while the trainer goes on: as a subreaper the agent
    // adopts it and must reap it, or it would stay a zombie until the run ends.
    const script = [
      "import os, sys, time",
      "if os.fork() == 0:",
      "    os.setsid()",
      "    if os.fork():",
      "        os._exit(0)",
      "    open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))",
      "    os.rename(sys.argv[1] + '.tmp', sys.argv[1])",
      "    time.sleep(0.2)",
      "    os._exit(0)",
      "os.wait()",
      "time.sleep(60)",
    ].join("\n");
    const marker = join(tmp(), "short.pid");
    const run = makeRun(script, { argv: ["train.py", marker] });
    await launch(run);
    const pid = await daemonPid(marker);
    await waitFor("the adopted orphan reaped", () => readText(`/proc/${pid}/stat`) === "", 10_000);
    expect((await cli(["signal", run.runDir, "kill"])).code).toBe(0);
    expect((await runToEnd(run)).exit).toMatchObject({ status: "canceled" });
  });

  test("kill -9 of the agent: its watcher ends the trainer and the daemon at once", async () => {
    const { run, marker } = daemonRun(60);
    const agentPid = await launch(run);
    let daemon: number | undefined;
    let trainer: number | undefined;
    try {
      daemon = await daemonPid(marker);
      trainer = await trainerPid(run);
      process.kill(agentPid, "SIGKILL");
      await waitFor("the trainer and its daemon gone", () => processGone(trainer!) && processGone(daemon!), 10_000);
      const { code, frames } = await follow(run.runDir);
      expect(code).toBe(5); // lost: the agent recorded no exit
      expect(frames[frames.length - 1]).toMatchObject({ k: "lost" });
    } finally {
      killQuietly(daemon);
      if (trainer !== undefined) killQuietly(trainer);
    }
  });

  test("reap (the client's cleanup after AGENT_FAILED) ends the run when the watcher died too; a no-op while the agent lives", async () => {
    const { run, marker } = daemonRun(60);
    const agentPid = await launch(run);
    let daemon: number | undefined;
    let trainer: number | undefined;
    try {
      daemon = await daemonPid(marker);
      trainer = await trainerPid(run);
      const alive = await cli(["reap", run.runDir]);
      expect(alive.json).toEqual({ killed: 0, agentAlive: true });
      const info = supervision(run);
      expect(info["child"]).toMatchObject({ pid: trainer, pgid: trainer, kind: "trainer" });
      process.kill(info["watcherPid"] as number, "SIGKILL");
      process.kill(agentPid, "SIGKILL");
      await sleep(500);
      expect(processGone(trainer)).toBe(false); // nothing else cleans up: reap has to
      const reaped = await cli(["reap", run.runDir]);
      expect(reaped.code).toBe(0);
      expect(reaped.json["agentAlive"]).toBe(false);
      expect(reaped.json["killed"]).toBeGreaterThanOrEqual(2);
      await waitFor("the trainer and its daemon gone", () => processGone(trainer!) && processGone(daemon!), 10_000);
    } finally {
      killQuietly(daemon);
      if (trainer !== undefined) killQuietly(trainer);
    }
  });

  test("reap never kills a process group that is no longer the run's (a reused pid)", async () => {
    // A run folder whose agent is gone, naming as its trainer's group a pid now used by an
    // unrelated process (a `sleep` in a group of its own), with the start time of the old trainer.
    const runDir = join(tmp(), "run");
    mkdirSync(runDir);
    const stranger = spawn("sleep", ["30"], { detached: true, stdio: "ignore" });
    const pid = stranger.pid!;
    try {
      writeFileSync(
        join(runDir, "supervision.json"),
        JSON.stringify({ version: 1, agentPid: 1, watcherPid: null, token: "0".repeat(32), subreaper: true, child: { pid, pgid: pid, startTicks: 1, kind: "trainer" } }),
      );
      const reaped = await cli(["reap", runDir]);
      expect(reaped.json).toEqual({ killed: 0, agentAlive: false });
      await sleep(200);
      expect(processGone(pid)).toBe(false);
    } finally {
      stranger.kill("SIGKILL");
    }
  });
});

describe.concurrent("agent events are bounded", () => {
  test("an event that would be megabytes long is cut under the bound, and the run's exit is read", async () => {
    // The script name goes into the SCRIPT_NOT_FOUND error's message: 2 MB of it.
    const huge = `${"x".repeat(2_000_000)}.py`;
    const run = makeRun("print('unused')", { argv: [huge] });
    await launch(run);
    const { events, exit } = await runToEnd(run);
    expect(exit).toMatchObject({ status: "failed", reason: "script" });
    const error = events.find((e) => e.type === "error")!;
    expect(error["code"]).toBe("SCRIPT_NOT_FOUND");
    expect(error["truncated"]).toEqual(["message"]);
    expect(String(error["message"])).toMatch(/^script xxx+\n\.\.\.\[runctl: \d+ characters cut\]\.\.\.\nx+\.py not found in /);
    for (const line of readText(join(run.runDir, "events.jsonl")).split("\n")) expect(line.length).toBeLessThan(15_000);
  });

  test("follow skips an unreadable line (over 1 MiB, from an older agent) with a warning instead of stalling", async () => {
    const runDir = join(tmp(), "run");
    mkdirSync(runDir);
    const big = JSON.stringify({ seq: 1, time: "2026-01-01T00:00:00.000Z", type: "warning", message: "y".repeat(1_500_000) });
    const exit = JSON.stringify({ seq: 2, time: "2026-01-01T00:00:01.000Z", type: "exit", status: "succeeded", exitCode: 0, signal: null, durationMs: 5, reason: "exit" });
    writeFileSync(join(runDir, "events.jsonl"), `${big}\n${exit}\n`);
    writeFileSync(join(runDir, "train.log"), "");
    const { code, frames } = await follow(runDir);
    expect(code).toBe(0);
    const events = eventsOf(frames);
    expect(events.map((e) => e.type)).toEqual(["warning", "exit"]);
    expect(String(events[0]!["message"])).toContain(`an event line of ${big.length + 1} bytes could not be read`);
    expect(frames[frames.length - 1]).toEqual({ k: "end" });
  });
});
