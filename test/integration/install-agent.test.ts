// The agent's install on a machine (src/agent/install-agent.ts), through the real local provider and
// a real interpreter: the unpacked folder with its bytecode, a concurrent install, a missing Python.
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { agentPathOn, ensureAgent } from "../../src/agent/install-agent.js";
import { local } from "../../src/providers/local/local-provider.js";
import type { Machine } from "../../src/providers/types.js";
import { rejection } from "../support/caught.js";

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function machineAt(options: { python?: string } = {}): Promise<{ machine: Machine; rootDir: string }> {
  const rootDir = await mkdtemp(join(tmpdir(), "runctl-install-"));
  dirs.push(rootDir);
  const machine = await local({ rootDir, ...options }).provision({ runId: "install-test" });
  return { machine, rootDir };
}

describe("ensureAgent", () => {
  it("unpacks the agent into a folder named by its content, with the bytecode of every module, and runs it", async () => {
    const { machine, rootDir } = await machineAt();
    const agent = await ensureAgent(machine);
    expect(agent.path).toBe(agentPathOn(rootDir));
    expect(agent.path).toMatch(/\/agent\/runctl-agent-[0-9a-f]{12}\/__main__\.py$/);
    const pkg = join(dirname(agent.path), "runctl_agent");
    const modules = (await readdir(pkg)).filter((f) => f.endsWith(".py")).map((f) => f.slice(0, -3));
    const compiled = (await readdir(join(pkg, "__pycache__"))).map((f) => f.split(".")[0]);
    expect(modules.length).toBeGreaterThan(10);
    expect(new Set(compiled)).toEqual(new Set(modules));
    // Nothing else is left in the agent folder: no zip, no temporary folder.
    expect(await readdir(join(rootDir, "agent"))).toEqual([dirname(agent.path).split("/").pop()]);
    expect((await readdir(dirname(agent.path))).sort()).toEqual(["__main__.py", "__pycache__", "runctl_agent"]);

    // It runs: the manifest of the agent's own folder lists its entry script.
    const reply = JSON.parse(execFileSync(agent.python, ["-S", agent.path, "manifest", dirname(agent.path)], { encoding: "utf8" })) as { files: Record<string, unknown> };
    expect(reply.files["__main__.py"]).toMatchObject({ size: expect.any(Number) });
  });

  it("two machines installing into one root at once both get a whole agent, and no temporary folder stays", async () => {
    const { rootDir } = await machineAt();
    const [a, b] = await Promise.all([
      local({ rootDir }).provision({ runId: "a" }).then((m) => ensureAgent(m)),
      local({ rootDir }).provision({ runId: "b" }).then((m) => ensureAgent(m)),
    ]);
    expect(a.path).toBe(b.path);
    expect(await readdir(join(rootDir, "agent"))).toEqual([dirname(a.path).split("/").pop()]);
    expect(execFileSync(a.python, ["-S", a.path, "manifest", dirname(a.path)], { encoding: "utf8" })).toContain('"__main__.py"');
  });

  it("an install killed mid-way leaves only its temporary folder, which a later install removes once it is over an hour old; the next install gets a whole agent", async () => {
    const { machine, rootDir } = await machineAt();
    const dir = dirname(agentPathOn(rootDir));
    // What a SIGKILL leaves at each step before the rename: half a zip, or half an unpacked folder.
    await mkdir(`${dir}.tmp.4242/runctl_agent`, { recursive: true });
    await writeFile(`${dir}.tmp.4242/agent.pyz`, "PK\x03\x04 cut short");
    await writeFile(`${dir}.tmp.4242/runctl_agent/cli.py`, "def entry(:");
    // Left by an older version's install killed two hours ago: stale, removed. The one above may be an
    // install in progress on another machine sharing the root: it stays.
    const stale = join(rootDir, "agent", "runctl-agent-0123456789ab.tmp.77");
    await mkdir(stale);
    await writeFile(join(stale, "agent.pyz"), "PK");
    const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
    await utimes(stale, twoHoursAgo, twoHoursAgo);
    const agent = await ensureAgent(machine);
    expect((await readdir(join(rootDir, "agent"))).sort()).toEqual([basename(dir), `${basename(dir)}.tmp.4242`]);
    expect(execFileSync(agent.python, ["-S", agent.path, "manifest", dir], { encoding: "utf8" })).toContain('"__main__.py"');
  });

  it("a machine without the interpreter fails with AGENT_FAILED naming Python 3.8, and installs nothing", async () => {
    const { machine, rootDir } = await machineAt({ python: "/nonexistent/python3" });
    const error = await rejection(ensureAgent(machine), "AGENT_FAILED");
    expect(error.message).toContain("Python 3.8 or newer");
    expect(await readdir(rootDir)).toEqual([]);
  });
});
