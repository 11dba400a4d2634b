import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { main as withRequirements } from "../../examples/requirements.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";
import { buildDemoWheel } from "../support/wheelhouse.js";

useTempRunctlHome("e2e-setup");

function buildWheelhouse(version: string): string {
  const wheelhouse = tempDir("wheels");
  buildDemoWheel(version, wheelhouse);
  return wheelhouse;
}

function projectWith(requirements: string): string {
  const dir = tempDir("setup-proj");
  writeFileSync(join(dir, "requirements.txt"), requirements);
  writeFileSync(
    join(dir, "use_pkg.py"),
    "import sys, runctl_demo_pkg\nprint('PKG', runctl_demo_pkg.VERSION, runctl_demo_pkg.greet('runctl'))\nprint('PYTHON', sys.prefix)\n",
  );
  return dir;
}

describe("setup: requirements into a cached venv, offline", () => {
  it("installs from a local wheelhouse; the trainer imports it; a second run reuses the venv", async () => {
    const wheelhouse = buildWheelhouse("1.2.3");
    const project = projectWith("runctl-demo-pkg==1.2.3\n");

    const first = await withRequirements({ projectDir: project, script: "use_pkg.py", wheelhouse });
    expect(first.result.status).toBe("succeeded");
    expect(first.lines).toContain("PKG 1.2.3 hello runctl");
    expect(first.setup?.reused).toBe(false);

    const second = await withRequirements({ projectDir: project, script: "use_pkg.py", wheelhouse });
    expect(second.result.status).toBe("succeeded");
    expect(second.lines).toContain("PKG 1.2.3 hello runctl");
    expect(second.setup?.reused).toBe(true);
    expect(second.setup?.venv).toBe(first.setup?.venv);
    // Reuse skips venv creation and pip entirely.
    expect(second.setup!.durationMs).toBeLessThan(first.setup!.durationMs);
  });

  it("a failing install fails the run with pip's message, and training never starts", async () => {
    const wheelhouse = buildWheelhouse("1.0.0");
    const project = projectWith("runctl-package-that-does-not-exist==9.9.9\n");
    const { result, lines } = await withRequirements({ projectDir: project, script: "use_pkg.py", wheelhouse });
    expect(result.status).toBe("failed");
    expect(result.exitCode).toBeNull();
    expect(result.error?.code).toBe("SETUP_FAILED");
    expect(result.error?.outputTail).toMatch(/No matching distribution found for runctl-package-that-does-not-exist==9\.9\.9/);
    expect(lines.some((l) => l.startsWith("PKG"))).toBe(false);
  });
});
