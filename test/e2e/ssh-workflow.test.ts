import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sshTransport, type RunEvent, type SshHost } from "runctl";
import { main as sshHostExample } from "../../examples/ssh-host.js";
import { leaseTestHosts, useTestbed, type HostLease } from "../testbed/inject.js";
import { useTempRunctlHome } from "../support/temp-home.js";
import { checkpointKeys } from "../../src/checkpoints/manifest.js";

useTempRunctlHome("e2e-ssh-workflow");
let lease: HostLease;
let host: SshHost;

beforeAll(async () => {
  lease = await leaseTestHosts(1);
  const h = lease.hosts[0]!;
  useTestbed().assertSafe(h.address);
  host = { host: h.address, port: h.port, username: h.user, privateKeyPath: h.privateKeyPath, knownHostsPath: h.knownHostsPath };
});
afterAll(async () => lease?.release());

describe("full workflow on an SSH host", () => {
  it("syncs, sets up, trains, streams logs, commits checkpoints on the host and cleans up the run folder", async () => {
    const events: RunEvent[] = [];
    const { result, latest, lines } = await sshHostExample({ host, verbose: false, onEvent: (e) => events.push(e) });
    expect(result.status).toBe("succeeded");
    expect(result.exitCode).toBe(0);
    expect(result.machine?.address).toBe(host.host);
    expect(lines).toContain("TRAINING_DONE");
    expect(lines.some((l) => l.startsWith("RUN_INFO run_id=" + result.runId))).toBe(true);
    expect(events.filter((e) => e.type === "phase").map((e) => (e as { phase: string }).phase)).toEqual(["provisioning", "syncing", "setup", "training", "teardown", "done"]);

    // keep: 2, committed on the host; the latest verifies byte for byte through SSH.
    expect(latest?.step).toBe(40);
    expect((await latest!.verify()).ok).toBe(true);

    // On the host itself: the manifest's sha256 match the stored files, and the run folder is gone.
    const t = sshTransport(host);
    try {
      const home = (await t.exec({ script: 'printf %s "$HOME"' })).stdout;
      const stored = `${home}/.runctl/checkpoints/${checkpointKeys.filesPrefix(result.runId, latest!.name, latest!.seq).replace(/\/$/, "")}`;
      for (const file of latest!.manifest.files) {
        const r = await t.exec(["sha256sum", `${stored}/${file.path}`]);
        expect(r.stdout.split(" ")[0]).toBe(file.sha256);
      }
      const kept = await t.exec({ script: `ls ${home}/.runctl/checkpoints/${result.runId}/checkpoints` });
      expect(kept.stdout.trim().split("\n").sort()).toEqual(["step-00000030", "step-00000040"]);
      const runDir = await t.exec(["test", "-e", `${home}/.runctl/runs/${result.runId}`]);
      expect(runDir.exitCode).toBe(1);
      // Nothing of the run is left running on the host.
      const ps = await t.exec({ script: "ps -eo args | grep -c '[t]rain_mnist_e2e' || true" });
      expect(ps.stdout.trim()).toBe("0");
    } finally {
      await t.close();
    }
  });
});
