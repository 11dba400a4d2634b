/**
 * `.container()` on SSH test hosts: each host runs its own dockerd inside its namespaces, reached at
 * the default socket path (/run/docker.sock in the host's private /run), so the plan names no daemon,
 * as on a real machine. The agent runs as the host's SSH user; the trainer in the test image.
 * - the quickstart trainer in a container, checkpoints verified over SSH, files owned by the user;
 * - a loop-device ext4 volume (the EBS stand-in) mounted into the container: one run writes a
 *   dataset onto it, the next trains from it and gets the same weights as from the synthetic set;
 * - a spot notice while training in a container: SIGTERM reaches the trainer, the final checkpoint is
 *   committed to S3, and the run resumes on the other host, again in a container, with 0 steps lost.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runctl, sshHosts, type SshHost, type Storage } from "runctl";
import { s3 } from "runctl/aws";
import { main as containerExample } from "../../examples/container.js";
import { FIXTURE_TRAINER, FIXTURE_TRAINERS_DIR } from "../fixtures/trainers.js";
import { ensureTestImage } from "../support/container-image.js";
import { startDockerd, type DockerDaemon } from "../support/docker.js";
import { shIn } from "../support/host-namespaces.js";
import { startImds, type TestImds } from "../support/imds-server.js";
import { loopVolume, type LoopVolume } from "../support/loop-volume.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../support/s3-server.js";
import { inspectorOf, sshHostOf } from "../support/ssh-hosts.js";
import { useTempRunctlHome } from "../support/temp-home.js";
import { leaseTestHosts, testbedInfo, type HostLease } from "../testbed/inject.js";
import type { SshTransport } from "runctl";

useTempRunctlHome("e2e-container-ssh");
let lease: HostLease;
let daemons: DockerDaemon[] = [];
let hosts: SshHost[];
let imds: TestImds[];
let server: TestS3Server;
let inspector: SshTransport;
let image: string;

beforeAll(async () => {
  lease = await leaseTestHosts(2);
  const gateway = testbedInfo().gateway;
  for (const h of lease.hosts) {
    const daemon = await startDockerd(h);
    daemons.push(daemon);
    image = await ensureTestImage(daemon.host);
    // The daemon at the default socket of this host only (its /run is its own).
    await shIn(h, 'ln -sfn "$1" /run/docker.sock', [daemon.socketPath]);
  }
  imds = await Promise.all(lease.hosts.map(() => startImds(gateway)));
  hosts = await Promise.all(lease.hosts.map((h, i) => sshHostOf(h, { imdsEndpoint: imds[i]!.endpoint, imdsPollMs: 200 })));
  server = await startS3Server({ address: gateway, buckets: ["runctl-test"] });
  inspector = await inspectorOf(lease.hosts[0]!);
}, 900_000);
afterAll(async () => {
  await inspector?.close();
  await server?.stop();
  await Promise.all((imds ?? []).map((i) => i.stop()));
  for (const d of daemons) await d.stop();
  daemons = [];
  await lease?.release();
});

function bucket(prefix: string): Storage {
  return s3(`s3://runctl-test/${prefix}`, { ...S3RVER_CLIENT_SETTINGS, endpoint: server.endpoint, credentials: TEST_AWS_CREDENTIALS });
}
const lineWith = (lines: readonly string[], tag: string): string | undefined => lines.find((l) => l.startsWith(`${tag} `));

describe(".container() on SSH hosts", () => {
  it("trains the quickstart trainer in a container on the host: checkpoints verify over SSH, files stay the user's", async () => {
    const { result, lines, latest, verification } = await containerExample({ provider: sshHosts(hosts[0]!), image, container: { pull: "never" }, verbose: false });
    expect(result.status).toBe("succeeded");
    expect(result.exitCode).toBe(0);
    expect(lines).toContain("CHECKPOINT_SAVED 60 /runctl/checkpoints/step-00000060");
    expect(latest?.step).toBe(60);
    expect(verification).toEqual({ ok: true, problems: [] });
    // The trainer ran as the SSH user (not the image's root): the agent owns what it wrote.
    const owner = await inspector.exec(["sh", "-c", 'stat -c %U "$HOME"/.runctl/runs/"$1"/checkpoints/step-00000060', "sh", result.runId]);
    expect(owner.stdout.trim()).toBe(lease.hosts[0]!.user);
    const left = await daemons[0]!.docker(["ps", "-aq"]);
    expect(left.stdout.trim()).toBe("");
  });

  it("an EBS-style volume mounted into the container: the trainer writes a dataset there, then trains from it", async () => {
    const vol: LoopVolume = await loopVolume(lease.hosts[0]!, { sizeMiB: 32 });
    try {
      const plan = Runctl.instance(sshHosts(hosts[0]!))
        .sync(FIXTURE_TRAINERS_DIR)
        .container(image, { pull: "never", mounts: [{ source: { mountPoint: vol.mountPoint }, target: "/data" }] });
      const exported = await plan.train(FIXTURE_TRAINER, { hyperparams: { "export-dataset": "/data/ds" } });
      expect(exported.status).toBe("succeeded");
      // On the host's volume, written by the container as the host user.
      const files = await inspector.exec(["sh", "-c", 'cd "$1" && stat -c "%n %U %s" train.csv test.csv', "sh", `${vol.mountPoint}/ds`]);
      expect(files.exitCode).toBe(0);
      for (const line of files.stdout.trim().split("\n")) expect(line).toMatch(new RegExp(`^(train|test)\\.csv ${lease.hosts[0]!.user} [1-9]\\d*$`));

      const trained = plan.train(FIXTURE_TRAINER, { hyperparams: { steps: 30, "data-file": "/data/ds/train.csv" } });
      const lines: string[] = [];
      for await (const e of trained) if (e.type === "log") lines.push(e.line);
      expect((await trained).status).toBe("succeeded");
      expect(lineWith(lines, "DATASET")).toContain("/data/ds/train.csv");
      // Same weights as from the synthetic set the file was exported from.
      const synthetic = plan.train(FIXTURE_TRAINER, { hyperparams: { steps: 30 } });
      const reference: string[] = [];
      for await (const e of synthetic) if (e.type === "log") reference.push(e.line);
      expect(lineWith(lines, "FINAL_STEP")).toBe(lineWith(reference, "FINAL_STEP"));
    } finally {
      await vol.cleanup();
    }
  });

  it("a spot notice while training in a container: SIGTERM, final checkpoint committed, resumed in a container on the other host", async () => {
    let notified = false;
    const { result, lines, events, latest, verification } = await containerExample({
      provider: sshHosts(hosts),
      image,
      container: { pull: "never" },
      storage: bucket("container-spot"),
      project: FIXTURE_TRAINERS_DIR,
      script: FIXTURE_TRAINER,
      hyperparams: { steps: 60, "checkpoint-every": 0, "sleep-per-step": 0.05 },
      recover: { maxRestarts: 1 },
      verbose: false,
      onEvent: (event) => {
        if (event.type === "metric" && event.step === 15 && !notified) {
          notified = true;
          imds[0]!.interruptIn(120);
        }
      },
    });
    imds[0]!.clear();
    expect(result.status).toBe("succeeded");
    expect(result.restarts).toBe(1);
    expect(result.interruptions[0]!.lostSteps).toBe(0);
    expect(result.machine?.address).toBe(hosts[1]!.host);
    // The trainer in the first container got SIGTERM and saved; the second resumed from that step.
    const saved = lineWith(lines, "SIGTERM_CHECKPOINT");
    expect(saved).toBeDefined();
    expect(lineWith(lines, "RESUMED_FROM_STEP")).toBe(`RESUMED_FROM_STEP ${saved!.split(" ")[1]}`);
    expect(events.some((e) => e.type === "recovered")).toBe(true);
    expect(latest?.step).toBe(60);
    expect(verification).toEqual({ ok: true, problems: [] });
    for (const d of daemons) expect((await d.docker(["ps", "-aq"])).stdout.trim()).toBe("");
  });
});
