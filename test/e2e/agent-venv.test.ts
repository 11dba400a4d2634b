// The agent's venv setup (src/agent/runctl_agent/) through its real command line: pip installs
// into venvs, which needs python3-venv, pip, setuptools and wheel (Debian packages the e2e tier's
// globalSetup installs), so these tests live in the e2e tier; the rest are in test/integration/agent.test.ts.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { cleanUpAgentTests, cli, launch, makeRun, only, PY, readText, runToEnd, SYSTEM_PY, tmp, waitFor } from "../support/agent-harness.js";

afterAll(() => cleanUpAgentTests());

describe.concurrent("agent setup (venvs)", () => {
  test("a failed pip install carries pip's own error; training never starts", async () => {
    const run = makeRun("open('trained.txt', 'w').write('x')\n");
    writeFileSync(join(run.code, "requirements.txt"), "runctl-no-such-package-xyz==9.9\n");
    run.spec["setup"] = {
      requirements: "requirements.txt",
      pip: { findLinks: [], noIndex: true, indexUrl: null, extraArgs: [] },
      systemSitePackages: false,
      commands: [],
      venvRoot: join(run.root, "venvs"),
    };
    await launch(run);
    const { events, exit, log } = await runToEnd(run);
    const error = only(events.filter((e) => e.type === "error"), "errors");
    expect(error["code"]).toBe("SETUP_FAILED");
    expect(String(error["outputTail"])).toMatch(/No matching distribution found for runctl-no-such-package-xyz/);
    expect(Buffer.byteLength(String(error["outputTail"]))).toBeLessThanOrEqual(4096);
    expect(log).toMatch(/No matching distribution found for runctl-no-such-package-xyz/);
    expect(exit).toMatchObject({ status: "failed", reason: "setup", exitCode: null });
    expect(events.some((e) => e.type === "phase" && e["phase"] === "training")).toBe(false);
    expect(events.some((e) => e.type === "venv")).toBe(false);
    expect(existsSync(join(run.code, "trained.txt"))).toBe(false);
    // The half-built venv is gone, so nothing can reuse it.
    expect(readdirSync(join(run.root, "venvs")).filter((n) => !n.endsWith(".lock"))).toEqual([]);
  });

  test("a local wheelhouse installs into a venv the trainer uses; the second run reuses it", async () => {
    const root = tmp();
    const pkg = join(root, "pkg");
    mkdirSync(join(pkg, "tinypkg"), { recursive: true });
    writeFileSync(join(pkg, "tinypkg", "__init__.py"), "VALUE = 42\n");
    writeFileSync(join(pkg, "setup.py"), "from setuptools import setup\nsetup(name='tinypkg', version='0.1', packages=['tinypkg'])\n");
    const wheels = join(root, "wheels");
    // Offline build; needs setuptools + wheel in the building interpreter (Debian's has both).
    const builders = [SYSTEM_PY, PY].filter((p) => p === PY || existsSync(p));
    const tried: string[] = [];
    for (const py of builders) {
      const r = spawnSync(py, ["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels, pkg], { timeout: 60_000 });
      tried.push(`${py}: exit ${r.status} ${r.stderr.toString().slice(-300)}`);
      if (r.status === 0) break;
    }
    const built = existsSync(wheels) ? readdirSync(wheels).filter((n) => n.endsWith(".whl")) : [];
    expect(built, tried.join("\n")).toHaveLength(1);

    const script = "import sys, tinypkg\nprint('tinypkg', tinypkg.VALUE, sys.prefix)\n";
    const setup = {
      requirements: "requirements.txt",
      pip: { findLinks: [wheels], noIndex: true, indexUrl: null, extraArgs: [] },
      systemSitePackages: false,
      commands: ["echo setup-ran > setup_marker.txt", "command -v python > which_python.txt"],
      venvRoot: join(root, "venvs"),
    };
    const first = makeRun(script, { setup }, root);
    writeFileSync(join(first.code, "requirements.txt"), "tinypkg\n");
    await launch(first);
    const one = await runToEnd(first);
    expect(one.exit).toMatchObject({ status: "succeeded" });
    const venv1 = only(one.events.filter((e) => e.type === "venv"), "venv events");
    expect(venv1).toMatchObject({ reused: false });
    const venvPath = String(venv1["path"]);
    expect(dirname(venvPath)).toBe(join(root, "venvs"));
    expect(basename(venvPath)).toMatch(/^[0-9a-f]{16}$/);
    expect(existsSync(join(venvPath, ".runctl-ready"))).toBe(true);
    expect(one.log).toContain(`tinypkg 42 ${venvPath}`);
    expect(readText(join(first.code, "setup_marker.txt")).trim()).toBe("setup-ran");
    expect(readText(join(first.code, "which_python.txt")).trim()).toBe(join(venvPath, "bin", "python"));
    expect(one.events.filter((e) => e.type === "phase").map((e) => e["phase"])).toEqual(["setup", "training", "teardown"]);

    const second = makeRun(script, { setup }, root);
    await launch(second);
    const two = await runToEnd(second);
    expect(two.exit).toMatchObject({ status: "succeeded" });
    const venv2 = only(two.events.filter((e) => e.type === "venv"), "venv events");
    expect(venv2).toMatchObject({ reused: true, path: venvPath });
    expect(venv2["durationMs"] as number).toBeLessThan(venv1["durationMs"] as number);
    expect(two.log).toContain(`tinypkg 42 ${venvPath}`);

    // Setup commands are not part of the venv key (they run every time); an interrupt during one
    // stops it and the run, and training never starts.
    const third = makeRun(script, { setup: { ...setup, commands: ["echo started-slow-step; exec sleep 30"] } }, root);
    await launch(third);
    await waitFor("slow setup step", () => readText(join(third.runDir, "train.log")).includes("started-slow-step"));
    expect((await cli(["signal", third.runDir, "interrupt"])).code).toBe(0);
    const three = await runToEnd(third);
    expect(only(three.events.filter((e) => e.type === "venv"), "venv events")).toMatchObject({ reused: true, path: venvPath });
    expect(only(three.events.filter((e) => e.type === "signal"), "signals")).toMatchObject({ signal: "SIGTERM", reason: "cancel" });
    expect(three.exit).toMatchObject({ status: "canceled", reason: "cancel", exitCode: null });
    expect(three.events.some((e) => e.type === "phase" && e["phase"] === "training")).toBe(false);
    expect(three.log).not.toContain("tinypkg 42");
  });
});
