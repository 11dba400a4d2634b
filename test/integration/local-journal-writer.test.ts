/**
 * Issue 10, item 6: one writer per local journal. Two `Runctl.attach(id)` in one process must not
 * both follow the machine (duplicated seqs, two exit events, logs counted twice), and a `writer.pid`
 * naming a live process that is not runctl (a reused pid) must not keep attach waiting once the
 * writer is gone.
 */
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Runctl, local, type RunEvent, type TrainingRun } from "runctl";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

const home = useTempRunctlHome("e2e-journal-writer");

/** A trainer printing `lines` numbered lines, `sleepS` apart. */
function trainerCode(lines: number, sleepS: number): string {
  const code = tempDir("journal-writer-code");
  writeFileSync(join(code, "train.py"), ["import time", `for i in range(${lines}):`, "    print('line', i, flush=True)", `    time.sleep(${sleepS})`].join("\n"));
  return code;
}

/** Starts a run and detaches once its line `at` arrived: the run goes on with nobody following it. */
async function startDetached(lines: number, at: number): Promise<string> {
  const run = Runctl.instance(local()).sync(trainerCode(lines, 0.01)).train("train.py");
  for await (const event of run) if (event.type === "log" && event.line === `line ${at}`) void run.cancel({ strategy: "detach" });
  expect((await run).status).toBe("detached");
  return run.runId;
}

async function drain(run: TrainingRun): Promise<RunEvent[]> {
  const events: RunEvent[] = [];
  for await (const event of run) events.push(event);
  return events;
}

function journalEvents(runId: string): RunEvent[] {
  return readFileSync(join(home, "runs", runId, "journal.jsonl"), "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => (JSON.parse(l) as { e: RunEvent }).e);
}

describe("the local journal has one writer", () => {
  it("two attaches in one process: one follows the machine, the other its journal; no duplicated seq, one exit, exact logs", async () => {
    const lines = 400;
    const runId = await startDetached(lines, 20);
    const a = Runctl.attach(runId, { pollMs: 50 });
    const b = Runctl.attach(runId, { pollMs: 50 });
    const [ea, eb] = await Promise.all([drain(a), drain(b)]);
    const [ra, rb] = await Promise.all([a, b]);
    expect(ra.status).toBe("succeeded");
    expect(rb.status).toBe("succeeded");

    const journal = journalEvents(runId);
    const seqs = journal.map((e) => e.seq);
    expect(seqs).toEqual(seqs.map((_, i) => i + 1));
    expect(journal.filter((e) => e.type === "exit")).toHaveLength(1);
    // Both attaches saw the same stream: the journal, in order.
    expect(ea.map((e) => e.seq)).toEqual(seqs);
    expect(eb.map((e) => e.seq)).toEqual(seqs);

    const logged: string[] = [];
    for await (const line of Runctl.attach(runId).logs()) if (!line.startsWith("[runctl] ")) logged.push(line);
    expect(logged).toEqual(Array.from({ length: lines }, (_, i) => `line ${i}`));
  });

  it("a writer in another process is followed through the journal; when it is SIGKILLed, attach takes over (the kernel frees the lock)", async () => {
    const child = spawn("npx", ["tsx", "examples/attach.ts", "start"], { env: { ...process.env, RUNCTL_HOME: home }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    const runId = await new Promise<string>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        const id = /RUN_ID (\S+)/.exec(out)?.[1];
        if (id && /RUNCTL_METRIC \{"step": 5,/.test(out)) resolve(id);
      });
      child.on("exit", (code) => reject(new Error(`client exited early (${code}): ${out}`)));
    });
    const run = Runctl.attach(runId, { pollMs: 50 });
    const events: RunEvent[] = [];
    let killed = false;
    for await (const event of run) {
      events.push(event);
      if (!killed && event.type === "metric" && event.step === 30) {
        killed = true;
        child.kill("SIGKILL");
      }
    }
    expect(killed).toBe(true);
    expect((await run).status).toBe("succeeded");
    const seqs = journalEvents(runId).map((e) => e.seq);
    expect(seqs).toEqual(seqs.map((_, i) => i + 1));
    expect(events.map((e) => e.seq)).toEqual(seqs);
    expect(events.filter((e) => e.type === "exit")).toHaveLength(1);
    expect(events.flatMap((e) => (e.type === "metric" && e.step !== undefined ? [e.step] : []))).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
  });

  it("a writer.pid naming a live unrelated process (a reused pid) does not block attach once the run ended", async () => {
    const runId = await startDetached(60, 5);
    const stranger = spawn("sleep", ["60"], { stdio: "ignore" });
    try {
      writeFileSync(join(home, "runs", runId, "writer.pid"), `${stranger.pid}\n`);
      // Let the run finish on the machine first: attach then only has to catch up.
      await new Promise((r) => setTimeout(r, 2000));
      const run = Runctl.attach(runId, { pollMs: 50 });
      const events = await drain(run);
      const result = await run;
      expect(result.status).toBe("succeeded");
      expect(events.filter((e) => e.type === "exit")).toHaveLength(1);
      expect(events.flatMap((e) => (e.type === "log" && e.line.startsWith("line ") ? [e.line] : []))).toEqual(Array.from({ length: 60 }, (_, i) => `line ${i}`));
    } finally {
      stranger.kill("SIGKILL");
    }
  }, 30_000);
});
