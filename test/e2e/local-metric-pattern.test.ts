import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Runctl, local, localDir, type RunEvent } from "runctl";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("e2e-metric-pattern");

describe("metricPattern through the RunSpec (local)", () => {
  it("turns matching log lines into metric events, numbers as numbers, step as the event's step", async () => {
    const dir = tempDir("metric-proj");
    writeFileSync(join(dir, "train.py"), "for s in (1, 2):\n    print(f'step={s} loss={1 / s} tag=x', flush=True)\nprint('no metric here', flush=True)\n");
    const run = Runctl.instance(local())
      .sync(dir)
      .checkpoints({ storage: localDir(tempDir("metric-ckpt")) })
      .train("train.py", { metricPattern: /step=(?<step>\d+) loss=(?<loss>\S+) tag=(?<tag>\w+)/u });
    const events: RunEvent[] = [];
    for await (const e of run) events.push(e);
    expect((await run).status).toBe("succeeded");
    const metrics = events.filter((e) => e.type === "metric");
    expect(metrics).toMatchObject([
      { type: "metric", step: 1, values: { step: 1, loss: 1, tag: "x" } },
      { type: "metric", step: 2, values: { step: 2, loss: 0.5, tag: "x" } },
    ]);
  });
});
