/**
 * Progress events and the logger option on a real local run (issue 16, items 6 and 7): a sync of a
 * few MB and a checkpoint of a few MB each report byte progress that only grows and ends at its
 * total; a `logger` given to local() receives the transport's commands, the provider's steps and the
 * agent's own lines, and never the value of a variable the run declares with `.env()`.
 */
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Runctl, local, localDir, type LogEntry, type ProgressEvent, type RunEvent } from "runctl";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("progress-logger");

const MiB = 2 ** 20;
const SECRET = "hf_progress_logger_secret_value_8c1d";

const TRAINER = `import os
path = os.path.join(os.environ["RUNCTL_CHECKPOINT_DIR"], "ckpt-1.pt")
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "wb") as f:
    f.write(os.urandom(${3 * MiB}))
print("TRAINED", flush=True)
`;

describe("progress events and the logger on a local run", () => {
  it("reports sync and checkpoint bytes up to their totals, and logs steps without secrets", async () => {
    const code = tempDir("progress-code");
    writeFileSync(join(code, "train.py"), TRAINER);
    writeFileSync(join(code, "weights.bin"), randomBytes(4 * MiB));
    const entries: LogEntry[] = [];
    const run = Runctl.instance(local({ logger: (entry) => entries.push(entry) }))
      .sync(code)
      .env({ HF_TOKEN: SECRET })
      .checkpoints({ storage: localDir(tempDir("progress-ckpt")) })
      .train("train.py");
    const events: RunEvent[] = [];
    for await (const event of run) events.push(event);
    const result = await run;
    expect(result.status, JSON.stringify(result.error)).toBe("succeeded");

    const progress = (phase: ProgressEvent["phase"]): ProgressEvent[] => events.filter((e): e is ProgressEvent => e.type === "progress" && e.phase === phase);
    const sync = progress("sync");
    expect(sync.length).toBeGreaterThan(0);
    expect(sync.at(-1)!.bytesTotal).toBeGreaterThanOrEqual(4 * MiB);
    const ckpt = progress("checkpoint");
    expect(ckpt.length).toBeGreaterThan(1); // the first report (0 bytes) and the last
    expect(new Set(ckpt.map((e) => e.name))).toEqual(new Set(["ckpt-1.pt"]));
    for (const series of [sync, ckpt]) {
      const last = series.at(-1)!;
      expect(new Set(series.map((e) => e.bytesTotal)).size).toBe(1);
      expect(last.bytesDone).toBe(last.bytesTotal);
      const done = series.map((e) => e.bytesDone);
      expect(done).toEqual([...done].sort((a, b) => a - b));
    }
    expect(ckpt.at(-1)!.bytesTotal).toBe(3 * MiB);
    // In the order a user sees them: the bytes, then the commit; the sync's bytes, then its summary.
    const at = (pred: (e: RunEvent) => boolean): number => events.findIndex(pred);
    expect(at((e) => e.type === "progress" && e.phase === "checkpoint" && e.bytesDone === e.bytesTotal)).toBeLessThan(at((e) => e.type === "checkpoint"));
    expect(at((e) => e.type === "progress" && e.phase === "sync" && e.bytesDone === e.bytesTotal)).toBeLessThan(at((e) => e.type === "sync"));

    const from = (source: LogEntry["source"]): string[] => entries.filter((e) => e.source === source).map((e) => e.message);
    expect(from("transport").some((m) => m.includes(": exec ") && m.includes("python3"))).toBe(true);
    expect(from("transport").some((m) => /: exit 0 in \d+ ms: /.test(m))).toBe(true);
    expect(from("provider").length).toBeGreaterThan(0);
    expect(from("agent").length).toBeGreaterThan(0);
    expect(entries.every((e) => e.level === "debug" || e.level === "info")).toBe(true);
    // The declared variable's value went to the machine (on the launch command's stdin), never to the log.
    expect(JSON.stringify(entries)).not.toContain(SECRET);
    expect(events.flatMap((e) => (e.type === "log" ? [e.line] : []))).toContain("TRAINED");
  });

  it("a logger that throws never fails the run", async () => {
    const code = tempDir("progress-code-2");
    writeFileSync(join(code, "train.py"), "print('OK', flush=True)\n");
    const run = Runctl.instance(local({ logger: { debug: () => { throw new Error("logger broke"); } } })).sync(code).train("train.py");
    const result = await run;
    expect(result.status, JSON.stringify(result.error)).toBe("succeeded");
  });
});
