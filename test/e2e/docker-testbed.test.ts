/**
 * The container test infrastructure proves the facts the container e2e tests rely on: a private
 * dockerd inside a test host, used over SSH by the host's user (DOCKER_HOST), runs the offline image
 * with `--network host` in the host's network only, sees loop volumes mounted in the host, delivers
 * `docker kill -s TERM` to a python handler under `--init`, and refuses `--gpus all` on a machine
 * without the NVIDIA runtime. A local daemon runs `--network none` containers. Nothing of it is left
 * afterwards, and the host stays usable.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { networkInterfaces } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SshTransport } from "../../src/transport/ssh/index.js";
import { sh } from "../testbed/sys.js";
import { TEST_IMAGE, ensureTestImage } from "../support/container-image.js";
import { startDockerd, type DockerDaemon } from "../support/docker.js";
import { loopVolume, type LoopVolume } from "../support/loop-volume.js";
import { leaseOneHost, type LeasedHost } from "../support/ssh-hosts.js";

/** Python, run in a container: hostname, local IPv4 addresses (/proc/net/fib_trie) and interfaces. */
const NET_FACTS = `
import json, socket
lines = open('/proc/net/fib_trie').read().split('\\n')
local = sorted({lines[i - 1].split()[-1] for i, l in enumerate(lines) if '/32 host LOCAL' in l})
ifs = sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').read().split('\\n')[2:] if ':' in l)
print(json.dumps({'hostname': socket.gethostname(), 'addresses': local, 'interfaces': ifs}))
`;

const TERM_HANDLER = `
import signal, sys, time
def on_term(signum, frame):
    print('handler ran', flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print('ready', flush=True)
time.sleep(600)
`;

interface NetFacts {
  readonly hostname: string;
  readonly addresses: string[];
  readonly interfaces: string[];
}

/** Root-namespace facts that a private daemon must not change. */
function rootNetworkState(): { links: string[]; ipForward: string } {
  return { links: Object.keys(networkInterfaces()).sort(), ipForward: readFileSync("/proc/sys/net/ipv4/ip_forward", "utf8").trim() };
}

describe("container test infrastructure (private dockerd, offline image, loop volume)", () => {
  let leased: LeasedHost;
  let ssh: SshTransport;
  let hostDaemon: DockerDaemon | undefined;
  let localDaemon: DockerDaemon | undefined;
  let vol: LoopVolume | undefined;
  let localVol: LoopVolume | undefined;
  const before = rootNetworkState();

  /** `docker ARGS` on the test host, over SSH, as its user. */
  const docker = (args: string[]) => ssh.exec(["docker", ...args], { env: { DOCKER_HOST: hostDaemon!.host } });

  beforeAll(async () => {
    leased = await leaseOneHost();
    ssh = leased.inspector;
    let t = Date.now();
    // First run on a machine: debootstrap builds the image tarball (~40-60 s), once.
    hostDaemon = await startDockerd(leased.testHost);
    // Before the local daemon: it sees this machine's mounts as they were when it started.
    localVol = await loopVolume("local", { sizeMiB: 16 });
    localDaemon = await startDockerd("local");
    const started = Date.now() - t;
    t = Date.now();
    await Promise.all([ensureTestImage(hostDaemon.host), ensureTestImage(localDaemon.host)]);
    vol = await loopVolume(leased.testHost, { sizeMiB: 32 });
    console.log(`[docker-testbed] two daemons ${started} ms, image + volume ${Date.now() - t} ms`);
  });

  afterAll(async () => {
    // Daemons first: the local one holds a copy of localVol's mount in its mount namespace.
    await hostDaemon?.stop();
    await localDaemon?.stop();
    await vol?.cleanup();
    await localVol?.cleanup();
    await leased?.release();
  });

  it("gives the host's user a socket only it (and root) can use", async () => {
    const st = statSync(hostDaemon!.socketPath);
    expect(st.mode & 0o777).toBe(0o660);
    expect(st.gid).toBe(Number((await sh("id", ["-g", leased.testHost.user])).stdout.trim()));
    const r = await docker(["version", "--format", "{{.Server.Version}}"]);
    expect(r.exitCode, r.stderrTail).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+/);
  });

  it("runs --network host containers in the test host's network only", async () => {
    const r = await docker(["run", "--rm", "--init", "--network", "host", TEST_IMAGE, "python3", "-c", NET_FACTS]);
    expect(r.exitCode, r.stderrTail).toBe(0);
    const facts = JSON.parse(r.stdout.trim()) as NetFacts;
    expect(facts.hostname).toBe(leased.testHost.hostname);
    expect(facts.addresses).toEqual(["127.0.0.1", leased.testHost.address].sort());
    // None of this machine's own addresses (its real uplink, the testbed bridge) is visible.
    const machine = Object.values(networkInterfaces()).flat().filter((a) => a && a.family === "IPv4" && !a.internal).map((a) => a!.address);
    expect(machine.length).toBeGreaterThan(0);
    for (const a of machine) expect(facts.addresses).not.toContain(a);
  });

  it("bind-mounts a loop volume mounted inside the host, writable by the host's user", async () => {
    const mp = vol!.mountPoint;
    expect(existsSync(mp)).toBe(false); // the mount lives in the host's namespace (its own /tmp), not here
    const w = await ssh.exec(["sh", "-c", 'echo from-host > "$1/from-host"', "sh", mp]);
    expect(w.exitCode, w.stderrTail).toBe(0);
    const script = "print(open('/ckpt/from-host').read().strip()); open('/ckpt/from-container', 'w').write('ok'); print([l.split()[2] for l in open('/proc/mounts') if l.split()[1] == '/ckpt'])";
    const r = await docker(["run", "--rm", "--init", "--network", "none", "-v", `${mp}:/ckpt`, TEST_IMAGE, "python3", "-c", script]);
    expect(r.exitCode, r.stderrTail).toBe(0);
    expect(r.stdout).toContain("from-host");
    expect(r.stdout).toContain("['ext4']");
    const back = await ssh.exec(["cat", `${mp}/from-container`]);
    expect(back.stdout).toBe("ok");
  });

  it("delivers docker kill -s TERM to the trainer's handler under --init", async () => {
    const name = `term-${process.pid}`;
    const run = await docker(["run", "-d", "--init", "--network", "none", "--name", name, TEST_IMAGE, "python3", "-u", "-c", TERM_HANDLER]);
    expect(run.exitCode, run.stderrTail).toBe(0);
    const deadline = Date.now() + 20_000;
    while (!(await docker(["logs", name])).stdout.includes("ready")) {
      if (Date.now() > deadline) throw new Error("the container never printed ready");
      await new Promise((r) => setTimeout(r, 100));
    }
    const kill = await docker(["kill", "-s", "TERM", name]);
    expect(kill.exitCode, kill.stderrTail).toBe(0);
    const wait = await docker(["wait", name]);
    expect(wait.stdout.trim()).toBe("0"); // the handler's exit, not 143 (killed by the signal)
    expect((await docker(["logs", name])).stdout).toContain("handler ran");
    await docker(["rm", name]);
  });

  it("refuses --gpus all without the NVIDIA runtime", async () => {
    const r = await docker(["run", "--rm", "--gpus", "all", "--network", "none", TEST_IMAGE, "true"]);
    expect(r.exitCode).toBe(125);
    expect(r.stderrTail).toContain('could not select device driver "" with capabilities: [[gpu]]');
  });

  it("runs --network none containers on the local daemon, which touches no network of this machine", async () => {
    const none = await localDaemon!.docker(["run", "--rm", "--init", "--network", "none", "-v", `${localVol!.mountPoint}:/data`, TEST_IMAGE, "python3", "-c", `${NET_FACTS}\nopen('/data/out', 'w').write('local')`]);
    expect(none.stderr).toBe("");
    expect((JSON.parse(none.stdout.trim()) as NetFacts).interfaces).toEqual(["lo"]);
    expect(readFileSync(`${localVol!.mountPoint}/out`, "utf8")).toBe("local");
    // Even --network host is an empty namespace on the default (isolated) local daemon.
    const host = await localDaemon!.docker(["run", "--rm", "--network", "host", TEST_IMAGE, "python3", "-c", NET_FACTS]);
    const facts = JSON.parse(host.stdout.trim()) as NetFacts;
    expect(facts.interfaces).toEqual(["lo"]);
    expect(facts.addresses).toEqual(["127.0.0.1"]);
    // No docker0, no bridge or veth of Docker's, ip_forward untouched (testbeds of other files add links).
    const after = rootNetworkState();
    expect(after.links.filter((l) => !before.links.includes(l) && /^(docker|br-|veth)/.test(l))).toEqual([]);
    expect(after.ipForward).toBe(before.ipForward);
  });

  it("stops without leaving daemons, mounts or loop devices, and the host stays usable", async () => {
    const dirs = [hostDaemon!.stateDir, localDaemon!.stateDir];
    await hostDaemon!.stop();
    await localDaemon!.stop();
    await vol!.cleanup();
    await localVol!.cleanup();
    expect(existsSync(localVol!.mountPoint)).toBe(false);
    for (const d of dirs) expect(existsSync(d)).toBe(false);
    const leftovers = readdirSync("/proc")
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          const cmd = readFileSync(`/proc/${p}/cmdline`, "utf8");
          return dirs.some((d) => cmd.includes(d));
        } catch {
          return false;
        }
      });
    expect(leftovers).toEqual([]);
    // The loop devices detached themselves at the last unmount.
    const loops = (await sh("losetup", ["-a"])).stdout;
    for (const v of [vol!, localVol!]) expect(loops).not.toContain(v.imagePath);
    const mounts = await ssh.exec(["cat", "/proc/self/mountinfo"]);
    for (const d of dirs) expect(mounts.stdout).not.toContain(d);
    expect(mounts.stdout).not.toContain(vol!.mountPoint);
    expect((await ssh.exec(["hostname"])).stdout.trim()).toBe(leased.testHost.hostname);
  });

  it("dies with a killed test host, like a machine crash, and starts again after the host restarts", async () => {
    const host = leased.testHost;
    const d = await startDockerd(host);
    try {
      await ensureTestImage(d.host);
      const init = await host.initPid();
      const run = await d.docker(["run", "-d", "--init", "--network", "host", TEST_IMAGE, "python3", "-c", "import time; time.sleep(600)"]);
      expect(run.code, run.stderr).toBe(0);
      const inHost = await host.pids();
      expect(inHost).toContain(d.pid); // dockerd is a process of the host
      // The container's own PID 1 is in the host's network namespace too: the host's init is still sshd.
      expect(await host.initPid()).toBe(init);
      await host.kill();
      expect(existsSync(`/proc/${d.pid}`)).toBe(false);
      await d.stop();
      expect(existsSync(d.stateDir)).toBe(false);
    } finally {
      await d.stop();
    }
    await host.start(); // a fresh mount namespace: the cgroups must be mounted again
    const again = await startDockerd(host);
    try {
      expect((await again.docker(["info", "--format", "{{.Driver}}"])).stdout.trim()).not.toBe("");
    } finally {
      await again.stop();
    }
  });
});
