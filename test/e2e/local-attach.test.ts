import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { RunctlError, Runctl } from "runctl";
import { reattach } from "../../examples/attach.js";
import { useTempRunctlHome } from "../support/temp-home.js";

const home = useTempRunctlHome("e2e-attach");

describe("client killed mid-run, then Runctl.attach", () => {
  it("the run goes on without the client; attach replays and follows it with no lost or repeated line", async () => {
    const child = spawn("npx", ["tsx", "examples/attach.ts", "start"], {
      env: { ...process.env, RUNCTL_HOME: home },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const runId = await new Promise<string>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        const id = /RUN_ID (\S+)/.exec(out)?.[1];
        // Wait until training is visibly under way, then kill the client without warning.
        if (id && /RUNCTL_METRIC \{"step": 10,/.test(out)) resolve(id);
      });
      child.on("exit", (code) => reject(new Error(`client exited early (${code}): ${out}`)));
    });
    child.kill("SIGKILL");
    await new Promise((r) => child.once("close", r));

    const { result, lines, seqs } = await reattach(runId, { verbose: false });
    expect(result.status).toBe("succeeded");
    expect(result.exitCode).toBe(0);
    // seq continues across the two processes with no gap or repeat.
    expect(seqs).toEqual(seqs.map((_, i) => i + 1));
    // Every step's metric line exactly once, in order.
    const steps = lines.flatMap((l) => {
      const m = /^RUNCTL_METRIC \{"step": (\d+),/.exec(l);
      return m ? [Number(m[1])] : [];
    });
    expect(steps).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(lines.filter((l) => l === "TRAINING_DONE")).toHaveLength(1);
    expect(result.checkpoints.map((c) => c.step)).toEqual([25, 50, 75, 100]);

    // Attaching again after the end replays the same journal and returns the same result.
    const replay = await reattach(runId, { verbose: false });
    expect(replay.lines).toEqual(lines);
    expect(replay.result.status).toBe("succeeded");

    // .logs({ from }) starts at that line of the same stream.
    const tail: string[] = [];
    for await (const line of Runctl.attach(runId).logs({ from: 5 })) tail.push(line);
    expect(tail).toEqual(lines.slice(5));
  });

  it("attach to an unknown run id is RUN_NOT_FOUND", () => {
    expect(() => Runctl.attach("20991231-000000-nosuch")).toThrowError(RunctlError);
    expect(() => Runctl.attach("../etc")).toThrowError(/not a run id/);
  });
});
