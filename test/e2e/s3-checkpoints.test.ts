import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runctl, sshHosts, sshTransport, type Checkpoint, type SshHost, type Storage } from "runctl";
import { s3 } from "runctl/aws";
import { main as s3Checkpoints } from "../../examples/s3-checkpoints.js";
import { main as syncToHost } from "../../examples/sync-to-host.js";
import { leaseTestHosts, testbedInfo, type HostLease } from "../testbed/inject.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../support/s3-server.js";
import { sshHostOf } from "../support/ssh-hosts.js";
import { checkpointKeys } from "../../src/checkpoints/manifest.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

const home = useTempRunctlHome("e2e-s3");
let lease: HostLease;
let hosts: SshHost[];
let server: TestS3Server;

/** Storage in the test bucket under `prefix`, reachable from the hosts (the server listens on the testbed bridge). */
function bucket(prefix: string): Storage {
  return s3(`s3://runctl-test/${prefix}`, { ...S3RVER_CLIENT_SETTINGS, endpoint: server.endpoint, credentials: TEST_AWS_CREDENTIALS });
}

async function textOf(storage: Storage, key: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of await storage.get(key)) chunks.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks).toString("utf8");
}

const valueOf = (lines: readonly string[], tag: string): string | undefined => lines.find((l) => l.startsWith(`${tag} `))?.slice(tag.length + 1);

beforeAll(async () => {
  lease = await leaseTestHosts(2);
  hosts = await Promise.all(lease.hosts.map((h) => sshHostOf(h)));
  // On the bridge address: this machine as the hosts see it (inside the guarded testbed subnet).
  server = await startS3Server({ address: testbedInfo().gateway, buckets: ["runctl-test"] });
});
afterAll(async () => {
  await server?.stop();
  await lease?.release();
});

describe("S3: data in, checkpoints and outputs out, written by the machine", () => {
  it("downloads data the trainer reads, commits checkpoints while the run goes, uploads outputs", async () => {
    // A dataset in S3, made by the trainer's own exporter.
    const dataset = tempDir("s3-dataset");
    execFileSync("python3", ["test/fixtures/trainers/train_mnist_e2e.py", "--export-dataset", dataset]);
    const data = bucket("datasets/mnist");
    for (const file of readdirSync(dataset)) await data.put(file, readFileSync(join(dataset, file)));
    const direct = execFileSync("python3", ["test/fixtures/trainers/train_mnist_e2e.py", "--steps", "1"], {
      env: { ...process.env, RUNCTL_DATA_DIR: dataset, RUNCTL_CHECKPOINT_DIR: tempDir("direct-ckpt") },
      encoding: "utf8",
    });
    const expectedDataset = JSON.parse(valueOf(direct.split("\n"), "DATASET")!) as { sha256: string };

    const storage = bucket("ckpt");
    const outputs = bucket("outputs");
    let committedWhileRunning: Checkpoint[] = [];
    const { runId, result, lines } = await s3Checkpoints({
      provider: sshHosts(hosts[0]!),
      storage,
      data,
      outputs,
      verbose: false,
      hyperparams: { steps: 60, "sleep-per-step": 0.05 },
      onEvent: async (event) => {
        if (event.type === "metric" && event.step === 45) committedWhileRunning = await Runctl.checkpoints(storage, event.runId).list();
      },
    });
    expect(result.status).toBe("succeeded");
    // The trainer read the downloaded files (same content hash as reading them locally).
    const seen = JSON.parse(valueOf(lines, "DATASET")!) as { source: string; sha256: string };
    expect(seen.source).toBe("file");
    expect(seen.sha256).toBe(expectedDataset.sha256);
    // Checkpoints were in S3, with manifests, before the run ended (keep: 3 had already pruned step 10).
    const early = committedWhileRunning.map((c) => c.step ?? -1);
    expect(early.length).toBeGreaterThanOrEqual(2);
    expect(early).toContain(30);
    expect(Math.max(...early)).toBeLessThanOrEqual(40);
    // keep: 3 -> the newest three; the latest downloads and verifies byte for byte.
    const store = Runctl.checkpoints(storage, runId);
    expect((await store.list()).map((c) => c.step)).toEqual([40, 50, 60]);
    const latest = (await store.latest())!;
    expect(latest.step).toBe(60);
    const dest = tempDir("s3-dl");
    const path = await latest.download(dest);
    for (const f of latest.manifest.files) expect(createHash("sha256").update(readFileSync(join(path, f.path))).digest("hex")).toBe(f.sha256);
    // Outputs: the trainer's final model, under <runId>/outputs/.
    const finalModel = JSON.parse(await textOf(outputs, `${runId}/outputs/final_model.json`)) as { weights_sha256: string };
    expect(lines).toContain(`FINAL_STEP 60 weights_sha256=${finalModel.weights_sha256}`);
  });

  it("keeps committing after the client is killed", async () => {
    const storage = bucket("killed-client");
    const h = hosts[0]!;
    const child = spawn("npx", ["tsx", "examples/s3-checkpoints.ts", "--steps", "60", "--sleep-per-step", "0.1"], {
      env: {
        ...process.env,
        RUNCTL_HOME: home,
        RUNCTL_S3_URI: "s3://runctl-test/killed-client",
        RUNCTL_S3_ENDPOINT: server.endpoint,
        AWS_ACCESS_KEY_ID: TEST_AWS_CREDENTIALS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: TEST_AWS_CREDENTIALS.secretAccessKey,
        AWS_REGION: "us-east-1",
        RUNCTL_SSH_HOST: `${h.username}@${h.host}:${h.port ?? 22}`,
        RUNCTL_SSH_KEY: h.privateKeyPath!,
        RUNCTL_SSH_KNOWN_HOSTS: h.knownHostsPath!,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const runId = await new Promise<string>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        const id = /^run (\S+)/m.exec(out)?.[1];
        if (id && /checkpoint step-00000010/.test(out)) resolve(id);
      });
      child.on("exit", (code) => reject(new Error(`client exited early (${code}): ${out} ${err}`)));
    });
    child.kill("SIGKILL");
    await new Promise((r) => child.once("close", r));

    // Nobody follows the run now; the machine still commits every checkpoint to S3.
    const store = Runctl.checkpoints(storage, runId);
    const deadline = Date.now() + 60_000;
    let latest: Checkpoint | undefined;
    while (Date.now() < deadline) {
      latest = await store.latest();
      if (latest?.step === 60) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(latest?.step).toBe(60);
    expect((await latest!.verify()).ok).toBe(true);
    expect((await store.list()).map((c) => c.step)).toEqual([40, 50, 60]);
  });

  it("a corrupted object is detected: downloads and resumes fall back to the previous checkpoint", async () => {
    const storage = bucket("corrupt");
    const first = await s3Checkpoints({ provider: sshHosts(hosts[0]!), storage, verbose: false, hyperparams: { steps: 30 } });
    expect(first.result.status).toBe("succeeded");
    const store = Runctl.checkpoints(storage, first.runId);
    const latest = (await store.latest())!;
    expect(latest.step).toBe(30);
    // Same key, different bytes: the manifest no longer matches.
    await storage.put(checkpointKeys.file(first.runId, latest.name, latest.seq, "model.json"), '{"tampered": true}');
    expect((await latest.verify()).ok).toBe(false);
    const used = await store.downloadLatest(tempDir("s3-fallback"));
    expect(used.skipped).toEqual([latest.name]);
    expect(used.checkpoint.step).toBe(20);

    // A new run on the other host resumes from the newest checkpoint that verifies.
    const second = await s3Checkpoints({ provider: sshHosts(hosts[1]!), storage, resumeFrom: first.runId, verbose: false, hyperparams: { steps: 40 } });
    expect(second.result.status).toBe("succeeded");
    expect(second.lines).toContain("RESUMED_FROM_STEP 20");
    expect(second.lines).toContain("START_STEP 21");
  });

  it("resumes on another host from S3 at the right step, with the same final weights as an uninterrupted run", async () => {
    const storage = bucket("resume");
    // Long enough that the cancel (sent when step 10 reaches the client) lands mid-run even when the
    // client lags seconds behind the trainer on a loaded machine.
    const hyperparams = { steps: 60, "sleep-per-step": 0.1 };
    const first = await s3Checkpoints({
      provider: sshHosts(hosts[0]!),
      storage,
      verbose: false,
      hyperparams,
      onEvent: async (event, cancel) => {
        if (event.type === "metric" && event.step === 10) await cancel();
      },
    });
    expect(first.result.status).toBe("canceled");
    const saved = Number(valueOf(first.lines, "SIGTERM_CHECKPOINT"));
    expect(saved).toBeGreaterThanOrEqual(10);
    expect(saved).toBeLessThan(60);
    expect((await Runctl.checkpoints(storage, first.runId).latest())?.step).toBe(saved);

    const second = await s3Checkpoints({ provider: sshHosts(hosts[1]!), storage, resumeFrom: first.runId, verbose: false, hyperparams });
    expect(second.result.status).toBe("succeeded");
    expect(second.result.machine?.address).toBe(hosts[1]!.host);
    expect(second.lines).toContain(`RESUMED_FROM_STEP ${saved}`);
    expect(second.lines).toContain(`START_STEP ${saved + 1}`);

    const straight = await s3Checkpoints({ provider: sshHosts(hosts[0]!), storage: bucket("straight"), verbose: false, hyperparams });
    expect(valueOf(second.lines, "FINAL_STEP")).toBe(valueOf(straight.lines, "FINAL_STEP"));
  });

  it("the S3 server killed mid-upload: no half checkpoint becomes LATEST, and the commit completes after it returns", async () => {
    const storage = bucket("outage");
    const store = (runId: string) => Runctl.checkpoints(storage, runId);
    let runId = "";
    let killedAt: number | undefined;
    const samples: Array<{ latest: string; hasManifest: boolean }> = [];
    const sampleLatest = async (): Promise<void> => {
      const name = (await textOf(storage, `${runId}/LATEST`).catch(() => "")).trim();
      if (!name) return;
      samples.push({ latest: name, hasManifest: (await store(runId).get(name)) !== undefined });
    };
    const { result } = await s3Checkpoints({
      provider: sshHosts(hosts[0]!),
      storage,
      verbose: false,
      hyperparams: { steps: 30, "checkpoint-every": 10, "ballast-mb": 80, "sleep-per-step": 0.1 },
      onEvent: async (event) => {
        runId = event.runId;
        // The trainer just wrote checkpoint 20 (80 MiB, over the 64 MiB multipart threshold: with boto3
        // the streamed single-read upload): kill the server while the agent uploads it.
        if (event.type === "log" && event.line.startsWith("CHECKPOINT_SAVED 20 ") && killedAt === undefined) {
          await new Promise((r) => setTimeout(r, 150));
          await server.kill();
          killedAt = Date.now();
          setTimeout(() => void server.restart(), 4000);
        }
        if (event.type === "checkpoint" && killedAt !== undefined) await sampleLatest();
      },
    });
    expect(killedAt).toBeDefined();
    expect(result.status).toBe("succeeded");
    const list = await store(runId).list();
    expect(list.map((c) => c.step)).toEqual([10, 20, 30]);
    for (const c of list) expect((await c.verify()).ok).toBe(true);
    // Whenever LATEST was read after the outage, it named a checkpoint whose manifest exists.
    expect(samples.length).toBeGreaterThan(0);
    expect(samples.every((s) => s.hasManifest)).toBe(true);
  });

  it("code sync staged through S3 (for machines without a byte stream) verifies on the host and leaves nothing staged", async () => {
    const project = tempDir("staged-proj");
    for (let i = 0; i < 20; i++) writeFileSync(join(project, `f${i}.py`), `print(${i})\n`.repeat(i + 1));
    const staging = bucket("staging");
    const first = await syncToHost({ host: hosts[1]!, localDir: project, staging, verbose: false });
    expect(first.result.uploadedFiles).toBe(20);
    writeFileSync(join(project, "f3.py"), "print('changed')\n");
    const second = await syncToHost({ host: hosts[1]!, localDir: project, staging, verbose: false });
    expect(second.result.uploadedFiles).toBe(1);
    const inspector = sshTransport(hosts[1]!);
    try {
      const r = await inspector.exec(["sha256sum", `${second.remoteDir}/f3.py`]);
      expect(r.stdout.split(" ")[0]).toBe(createHash("sha256").update("print('changed')\n").digest("hex"));
    } finally {
      await inspector.close();
    }
    const left: string[] = [];
    for await (const o of staging.list("")) left.push(o.key);
    expect(left).toEqual([]);
  });
});
