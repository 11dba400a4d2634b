/**
 * Issue 10, item 4, through the public API: when the agent dies (SIGKILL, here together with its
 * watcher, as the OOM killer or a `kill -9` of everything runctl could do), the run ends AGENT_FAILED
 * and the client, before it gives the machine back, ends the trainer and everything it started
 * (a daemon that left its process group included). Locally and over SSH (a testbed host).
 */
import { randomBytes } from "node:crypto";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Runctl, local, sshHosts, type Provider, type SshHost } from "runctl";
import { leaseTestHosts, useTestbed, type HostLease, type TestHost } from "../testbed/inject.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("e2e-supervision");

/** A trainer that starts a daemon (double fork + setsid), then prints a line and sleeps. */
const TRAINER = [
  "import os, time",
  "if os.fork() == 0:",
  "    os.setsid()",
  "    if os.fork():",
  "        os._exit(0)",
  "    time.sleep(600)",
  "    os._exit(0)",
  "os.wait()",
  "print('daemon started', flush=True)",
  "time.sleep(600)",
].join("\n");

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
  } catch {
    return "";
  }
}

/** Live (not zombie) processes among pids whose command line contains text. */
function matching(pids: number[], text: string): number[] {
  return pids.filter((pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
      return state !== "Z" && cmdline(pid).includes(text);
    } catch {
      return false;
    }
  });
}

function localPids(): number[] {
  return readdirSync("/proc").filter((p) => /^\d+$/.test(p)).map(Number).filter((p) => p !== process.pid);
}

/**
 * Starts a run of TRAINER, SIGKILLs its watcher and its agent once the daemon runs, and returns the
 * result and the processes of the trainer (trainer and daemon, found by a unique hyperparameter).
 */
async function killAgentMidRun(provider: Provider, pids: () => Promise<number[]>): Promise<{ status: string; code: string | undefined; left: number[] }> {
  const code = tempDir("supervision-code");
  writeFileSync(join(code, "train.py"), TRAINER);
  const tag = `tag${randomBytes(6).toString("hex")}`;
  const run = Runctl.instance(provider).sync(code).train("train.py", { hyperparams: { tag } });
  for await (const event of run) {
    if (event.type === "log" && event.line === "daemon started") break;
  }
  const all = await pids();
  const trainers = matching(all, tag);
  expect(trainers.length, "trainer and daemon").toBe(2);
  const watcher = matching(all, `watch `).filter((p) => cmdline(p).includes(run.runId));
  const agent = matching(all, `supervise `).filter((p) => cmdline(p).includes(run.runId));
  expect(agent).toHaveLength(1);
  // The watcher first (where there is one), so only the client can clean up.
  for (const pid of [...watcher, ...agent]) process.kill(pid, "SIGKILL");
  const result = await run;
  let left = matching(await pids(), tag);
  for (let i = 0; i < 20 && left.length > 0; i++) {
    await sleep(100);
    left = matching(await pids(), tag);
  }
  for (const pid of left) process.kill(pid, "SIGKILL"); // a failed test leaves nothing behind
  return { status: result.status, code: result.error?.code, left };
}

describe("the agent dies: the client ends the trainer before releasing the machine", () => {
  it("local: AGENT_FAILED, and no process of the run is left (its daemon included)", async () => {
    const { status, code, left } = await killAgentMidRun(local(), async () => localPids());
    expect(status).toBe("failed");
    expect(code).toBe("AGENT_FAILED");
    expect(left).toEqual([]);
  });

  describe("over SSH", () => {
    let lease: HostLease;
    let h: TestHost;
    let host: SshHost;
    beforeAll(async () => {
      lease = await leaseTestHosts(1);
      h = lease.hosts[0]!;
      await useTestbed().assertSafe(h.address);
      host = { host: h.address, port: h.port, username: h.user, privateKeyPath: h.privateKeyPath, knownHostsPath: h.knownHostsPath };
    });
    afterEach(async () => h?.ensureHealthy());
    afterAll(async () => lease?.release());

    it("sshHosts: AGENT_FAILED, and the kill over the transport leaves no process of the run on the host", async () => {
      const { status, code, left } = await killAgentMidRun(sshHosts(host), () => h.pids());
      expect(status).toBe("failed");
      expect(code).toBe("AGENT_FAILED");
      expect(left).toEqual([]);
    });
  });
});
