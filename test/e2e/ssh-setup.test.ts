import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SshHost, SshTransport } from "runctl";
import { main as sshRequirements } from "../../examples/ssh-requirements.js";
import type { TestHost } from "../testbed/inject.js";
import { leaseOneHost, settledProcesses } from "../support/ssh-hosts.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";
import { buildDemoWheel } from "../support/wheelhouse.js";

useTempRunctlHome("e2e-ssh-setup");
let testHost: TestHost;
let host: SshHost;
let inspector: SshTransport;
let release: (() => Promise<void>) | undefined;

beforeAll(async () => ({ testHost, host, inspector, release } = await leaseOneHost()));
afterAll(() => release?.());

/**
 * A project whose wheelhouse travels with the code: `wheels/` holds a real wheel of a tiny package
 * (built offline with Debian's python3, which has `wheel`), requirements.txt names it.
 */
function projectWithWheel(version: string): string {
  const dir = tempDir("ssh-setup-proj");
  buildDemoWheel(version, join(dir, "wheels"));
  // The comment makes this file's hash (the venv key) unique to this test run.
  writeFileSync(join(dir, "requirements.txt"), `# ssh-setup ${Date.now()}-${process.pid}\nrunctl-demo-pkg==${version}\n`);
  writeFileSync(
    join(dir, "use_pkg.py"),
    "import sys, runctl_demo_pkg\nprint('PKG', runctl_demo_pkg.VERSION, runctl_demo_pkg.greet('runctl'))\nprint('PREFIX', sys.prefix)\nprint('MODULE', runctl_demo_pkg.__file__)\n",
  );
  return dir;
}

const valueOf = (lines: readonly string[], tag: string): string | undefined => lines.find((l) => l.startsWith(`${tag} `))?.slice(tag.length + 1);

describe("dependencies on an SSH host, offline", () => {
  it("installs a wheel synced with the code into a venv the trainer imports from; a second run reuses the venv", async () => {
    const project = projectWithWheel("1.2.3");

    const first = await sshRequirements({ host, projectDir: project, script: "use_pkg.py", verbose: false });
    expect(first.result.status, JSON.stringify(first.result.error)).toBe("succeeded");
    expect(first.result.machine?.address).toBe(testHost.address);
    expect(first.sync?.files).toBe(3); // requirements.txt, use_pkg.py, the wheel
    expect(first.sync?.uploadedFiles).toBe(3);
    expect(first.lines).toContain("PKG 1.2.3 hello runctl");
    expect(first.setup?.reused).toBe(false);
    const venv = first.setup!.venv;
    // The trainer ran inside the venv on the host, and imported the package installed there.
    expect(valueOf(first.lines, "PREFIX")).toBe(venv);
    expect(valueOf(first.lines, "MODULE")?.startsWith(`${venv}/`)).toBe(true);

    // On the host: only the venv has the package; the host's own python3 does not.
    const inVenv = await inspector.exec([`${venv}/bin/python`, "-c", "import runctl_demo_pkg; print(runctl_demo_pkg.VERSION)"]);
    expect(inVenv.stdout.trim()).toBe("1.2.3");
    const system = await inspector.exec(["python3", "-c", "import runctl_demo_pkg"]);
    expect(system.exitCode).toBe(1);
    expect(system.stderrTail).toMatch(/No module named 'runctl_demo_pkg'/);

    const second = await sshRequirements({ host, projectDir: project, script: "use_pkg.py", verbose: false });
    expect(second.result.status).toBe("succeeded");
    expect(second.sync?.uploadedFiles).toBe(0); // the mirror on the host is up to date
    expect(second.lines).toContain("PKG 1.2.3 hello runctl");
    expect(second.setup?.reused).toBe(true);
    expect(second.setup?.venv).toBe(venv);
    // Reuse skips venv creation and pip entirely.
    expect(second.setup!.durationMs).toBeLessThan(first.setup!.durationMs);
    console.log(`[ssh-setup] venv created in ${first.setup!.durationMs} ms, reused in ${second.setup!.durationMs} ms; runs took ${first.result.durationMs} / ${second.result.durationMs} ms`);

    expect(await settledProcesses(inspector)).toEqual([]);
  });
});
