/**
 * The agent's bounded `follow` (--max-wait-ms, --max-bytes): for transports that return output only
 * when a command ends (SSM), each call stops with a `pause` frame and the client calls again from
 * its cursor. Across calls the frames must be exactly those of one unbounded follow: no log line or
 * event lost, repeated or reordered, and `end` once.
 */
import { join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { cleanUpAgentTests, cli, follow, launch, makeRun, readText, tmp, type Frame } from "../support/agent-harness.js";

afterAll(() => cleanUpAgentTests());

/** One bounded call: its frames and its stdout size. */
async function boundedCall(runDir: string, log: number, events: number, maxWaitMs: number, maxBytes: number): Promise<{ code: number | null; frames: Frame[]; bytes: number; ms: number }> {
  const started = Date.now();
  const r = await cli(["follow", runDir, "--log-offset", String(log), "--events-offset", String(events), "--max-wait-ms", String(maxWaitMs), "--max-bytes", String(maxBytes)]);
  const frames = r.stdout
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Frame);
  return { code: r.code, frames, bytes: Buffer.byteLength(r.stdout), ms: Date.now() - started };
}

/** Follows with bounded calls until `end`, as the client does over SSM; returns the frames and the calls made. */
async function followBounded(runDir: string, maxWaitMs: number, maxBytes: number): Promise<{ frames: Frame[]; calls: number }> {
  let log = 0;
  let events = 0;
  const frames: Frame[] = [];
  for (let calls = 1; calls < 2000; calls++) {
    const call = await boundedCall(runDir, log, events, maxWaitMs, maxBytes);
    expect(call.code, JSON.stringify(call.frames.slice(-3))).toBe(0);
    // Within the budget (no single frame here is bigger than it), and ended by pause or end.
    expect(call.bytes).toBeLessThanOrEqual(maxBytes);
    const last = call.frames.at(-1);
    expect(["pause", "end"]).toContain(last?.k);
    for (const f of call.frames) {
      if (f.k === "log") log = f.o!;
      if (f.k === "ev") events = f.o!;
      if (f.k !== "pause" && f.k !== "hb") frames.push(f);
    }
    if (last?.k === "end") return { frames, calls };
  }
  throw new Error("bounded follow never ended");
}

const chatty = [
  "import sys, time",
  "for i in range(1500):",
  "    print('line %05d ' % i + 'x' * 30)",
  "    if i % 300 == 0:",
  "        print('RUNCTL_METRIC {\"step\": %d}' % i)",
  "        time.sleep(0.2)",
  "sys.stdout.write('unterminated tail')",
].join("\n");

describe.concurrent("bounded follow", () => {
  test("while the run goes: calls pause at the byte budget and together equal one unbounded follow", async () => {
    const run = makeRun(chatty, {}, tmp());
    await launch(run);
    const bounded = await followBounded(run.runDir, 400, 3000);
    expect(bounded.calls).toBeGreaterThan(10);
    const whole = await follow(run.runDir);
    expect(whole.code).toBe(0);
    expect(bounded.frames).toEqual(whole.frames.filter((f) => f.k !== "hb"));
    const lines = bounded.frames.filter((f) => f.k === "log").map((f) => f.l);
    expect(lines).toHaveLength(1500 + 5 + 1);
    expect(lines.at(-1)).toBe("unterminated tail");
    expect(bounded.frames.filter((f) => f.k === "end")).toHaveLength(1);
  });

  test("after the run ended: the drain before and after the exit event is split too", async () => {
    const run = makeRun(chatty.replace("time.sleep(0.2)", "pass"), {}, tmp());
    await launch(run);
    const whole = await follow(run.runDir); // waits for the end
    const bounded = await followBounded(run.runDir, 400, 2500);
    expect(bounded.frames).toEqual(whole.frames.filter((f) => f.k !== "hb"));
    // A cursor just past the exit event (a call that paused while draining): the rest of the log, then end.
    const evBytes = Buffer.byteLength(readText(join(run.runDir, "events.jsonl")));
    const rest = await boundedCall(run.runDir, 0, evBytes, 400, 1_000_000);
    expect(rest.frames.at(-1)).toEqual({ k: "end" });
    expect(rest.frames.filter((f) => f.k === "log")).toHaveLength(1506);
  });

  test("a quiet run: a call pauses after max-wait-ms with nothing lost", async () => {
    const run = makeRun("import time\nprint('start', flush=True)\ntime.sleep(4)\nprint('done')", {}, tmp());
    await launch(run);
    await new Promise((r) => setTimeout(r, 600));
    const first = await boundedCall(run.runDir, 0, 0, 500, 16_000);
    expect(first.code).toBe(0);
    expect(first.frames.at(-1)).toEqual({ k: "pause" });
    expect(first.frames.filter((f) => f.k === "log").map((f) => f.l)).toEqual(["start"]);
    expect(first.ms).toBeLessThan(3000);
    const all = await followBounded(run.runDir, 500, 16_000);
    expect(all.frames.filter((f) => f.k === "log").map((f) => f.l)).toEqual(["start", "done"]);
  });

  test("rejects bad limits (usage, exit 2)", async () => {
    const run = makeRun("print(1)", {}, tmp());
    expect((await cli(["follow", run.root, "--max-bytes", "0"])).code).toBe(2);
    expect((await cli(["follow", run.root, "--max-wait-ms", "soon"])).code).toBe(2);
  });
});
