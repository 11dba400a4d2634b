/**
 * The agent keeps the money budget and powers the machine off by itself (spec.limits.budget,
 * spec.shutdown), so both hold when no client is watching. The shutdown command here is harmless:
 * it writes a marker file (whole, by rename, so a check never sees it half written) instead of
 * powering anything off.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { cleanUpAgentTests, launch, makeRun, runToEnd, tmp, waitFor } from "../support/agent-harness.js";

afterAll(() => cleanUpAgentTests());

const slow = ["import time", "for i in range(600):", "    print('step', i, flush=True)", "    time.sleep(0.05)"].join("\n");

describe.concurrent("agent: budget and shutdown", () => {
  test("stops the trainer once (maxUsd - spentUsd) / hourlyUsd has passed, and schedules the shutdown a minute later at most", async () => {
    const marker = join(tmp(), "powered-off");
    // $3600/h is a dollar a second: with $1.5 of $2 already spent, half a second is left.
    const run = makeRun(slow, {
      limits: { maxDurationMs: null, graceMs: 1000, budget: { maxUsd: 2, hourlyUsd: 3600, spentUsd: 1.5 } },
      shutdown: { command: ["sh", "-c", `echo off > '${marker}.tmp' && mv '${marker}.tmp' '${marker}'`], afterRunMs: 1000 },
    });
    await launch(run);
    const { events, exit, log } = await runToEnd(run);
    expect(exit["status"]).toBe("failed");
    expect(exit["reason"]).toBe("budget");
    expect(log.split("\n").filter((l) => l.startsWith("step")).length).toBeLessThan(100);
    const scheduled = events.find((e) => e.type === "shutdown-scheduled");
    expect(scheduled?.["inMs"]).toBe(1000);
    expect(events.indexOf(scheduled!)).toBeLessThan(events.indexOf(events.find((e) => e.type === "exit")!));
    // The command really runs after the delay, outliving the agent.
    await waitFor("the shutdown command", () => existsSync(marker), 10_000);
    expect(readFileSync(marker, "utf8").trim()).toBe("off");
  });

  test("a run that ends normally schedules the shutdown after afterRunMs (the backstop for a dead client)", async () => {
    const marker = join(tmp(), "powered-off");
    // 4 s: long enough that a loaded machine still reads the end before the command runs.
    const run = makeRun("print('done')", { shutdown: { command: ["sh", "-c", `echo off > '${marker}.tmp' && mv '${marker}.tmp' '${marker}'`], afterRunMs: 4000 } });
    await launch(run);
    const { events, exit } = await runToEnd(run);
    expect(exit["status"]).toBe("succeeded");
    expect(events.find((e) => e.type === "shutdown-scheduled")?.["inMs"]).toBe(4000);
    expect(existsSync(marker)).toBe(false);
    await waitFor("the shutdown command", () => existsSync(marker), 15_000);
  });

  /** A folder with a fake `shutdown` that records its arguments (and fails with `exitCode`), first on PATH. */
  const fakeShutdown = (exitCode = 0): { env: NodeJS.ProcessEnv; calls: string } => {
    const bin = tmp();
    const calls = join(bin, "calls");
    writeFileSync(join(bin, "shutdown"), `#!/bin/sh\necho "$*" >> '${calls}'\n${exitCode === 0 ? "" : "echo 'Failed to cancel: no permission' >&2\n"}exit ${exitCode}\n`, { mode: 0o755 });
    return { env: { ...process.env, PATH: `${bin}:${process.env["PATH"] ?? ""}` }, calls };
  };

  test("a machine launched with a boot-time power-off: the agent cancels it when it starts (issue 10, item 10)", async () => {
    const { env, calls } = fakeShutdown();
    // The trainer sees the power-off already canceled: the agent does it before anything else.
    const run = makeRun(`print('calls:', open('${calls}').read().strip())`, { shutdown: { command: ["true"], afterRunMs: 0, cancelBootPowerOff: ["shutdown", "-c"] } });
    await launch(run, { env });
    const { events, log } = await runToEnd(run);
    expect(log).toContain("calls: -c\n");
    expect(readFileSync(calls, "utf8")).toBe("-c\n"); // once
    expect(events.filter((e) => e.type === "warning")).toEqual([]);
  });

  test("without the spec flag the agent never cancels a power-off it did not come with", async () => {
    const { env, calls } = fakeShutdown();
    const run = makeRun("print('done')", { shutdown: { command: ["true"], afterRunMs: 0 } });
    await launch(run, { env });
    await runToEnd(run);
    expect(existsSync(calls)).toBe(false);
  });

  test("a cancel that fails is a warning event (the machine would power off mid-run); the run goes on", async () => {
    const { env, calls } = fakeShutdown(1);
    const run = makeRun("print('done')", { shutdown: { command: ["true"], afterRunMs: 0, cancelBootPowerOff: ["shutdown", "-c"] } });
    await launch(run, { env });
    const { events, exit } = await runToEnd(run);
    expect(readFileSync(calls, "utf8")).toBe("-c\n");
    expect(exit["status"]).toBe("succeeded");
    expect(String(events.find((e) => e.type === "warning")?.["message"])).toMatch(/could not cancel the machine's boot-time power-off \(exit 1: Failed to cancel: no permission\)/);
  });

  test("no shutdown spec: nothing is scheduled", async () => {
    const run = makeRun("print('done')");
    await launch(run);
    const { events } = await runToEnd(run);
    expect(events.some((e) => e.type === "shutdown-scheduled")).toBe(false);
  });
});
