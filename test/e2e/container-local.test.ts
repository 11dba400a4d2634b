/**
 * `.container()` on this machine, for real: a private dockerd (its own empty network namespace, so
 * even a host-network container reaches nothing), the offline test image, examples/container.ts.
 * Asserts what a user sees: exit status and code, log lines and metrics from inside the container,
 * committed checkpoints that verify, SIGTERM reaching the trainer, typed errors before anything
 * starts, and no container left behind, even after the agent is SIGKILLed.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runctl, local, localDir, type RunEvent } from "runctl";
import { main as containerExample } from "../../examples/container.js";
import { FIXTURE_TRAINER, FIXTURE_TRAINERS_DIR } from "../fixtures/trainers.js";
import { ensureTestImage } from "../support/container-image.js";
import { startDockerd, type DockerDaemon } from "../support/docker.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";
import { buildDemoWheel } from "../support/wheelhouse.js";

const home = useTempRunctlHome("e2e-container-local");
let daemon: DockerDaemon;
let image: string;

beforeAll(async () => {
  daemon = await startDockerd("local");
  image = await ensureTestImage(daemon.host);
}, 600_000);
afterAll(async () => {
  await daemon?.stop();
});

/** Container ids of the daemon (all states), so a test can assert that a run left none behind. */
async function containers(): Promise<string[]> {
  const r = await daemon.docker(["ps", "-aq"]);
  return r.stdout.split("\n").filter(Boolean);
}
const phasesOf = (events: readonly RunEvent[]): string[] => events.flatMap((e) => (e.type === "phase" ? [e.phase] : []));

describe(".container() on this machine", () => {
  it("trains the quickstart trainer in the image: metrics and logs arrive, checkpoints verify, exit code is the truth", async () => {
    const storage = localDir(tempDir("ctr-ckpt"));
    const { result, lines, events, latest, verification } = await containerExample({ image, container: { host: daemon.host, pull: "never" }, storage, verbose: false });
    expect(result.status).toBe("succeeded");
    expect(result.exitCode).toBe(0);
    expect(phasesOf(events)).toEqual(["provisioning", "syncing", "setup", "training", "teardown", "done"]);
    // The trainer saw the container's paths: it ran inside the image, with the run's folder mounted.
    expect(lines).toContain("CHECKPOINT_SAVED 60 /runctl/checkpoints/step-00000060");
    expect(events.flatMap((e) => (e.type === "metric" ? [e.step] : []))).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    expect((await Runctl.checkpoints(storage, result.runId).list()).map((c) => c.step)).toEqual([20, 40, 60]);
    expect(latest?.step).toBe(60);
    expect(verification).toEqual({ ok: true, problems: [] });
    expect(await containers()).toEqual([]);
  });

  it("a failing trainer fails the run with its own exit code; SIGKILL inside is reported as a signal", async () => {
    const plan = Runctl.instance(local()).sync(FIXTURE_TRAINERS_DIR).container(image, { host: daemon.host, pull: "never" });
    const failed = await plan.train(FIXTURE_TRAINER, { hyperparams: { steps: 20, "fail-at-step": 5 } });
    expect(failed.status).toBe("failed");
    expect(failed.exitCode).toBe(3);
    expect(failed.error?.code).toBe("TRAINING_FAILED");

    const run = plan.train(FIXTURE_TRAINER, { hyperparams: { steps: 100_000, "sleep-per-step": 0.01 } });
    for await (const e of run) if (e.type === "metric" && e.step === 5) void run.cancel({ strategy: "kill" });
    const killed = await run;
    expect(killed.status).toBe("canceled");
    expect(killed.signal).toBe("SIGKILL");
    expect(await containers()).toEqual([]);
  });

  it("cancel: SIGTERM reaches the trainer in the container, which saves; that checkpoint is committed", async () => {
    const storage = localDir(tempDir("ctr-cancel"));
    const run = Runctl.instance(local())
      .sync(FIXTURE_TRAINERS_DIR)
      .container(image, { host: daemon.host, pull: "never" })
      .checkpoints({ storage })
      .train(FIXTURE_TRAINER, { hyperparams: { steps: 100_000, "checkpoint-every": 0, "sleep-per-step": 0.01 } });
    const lines: string[] = [];
    for await (const e of run) {
      if (e.type === "log") lines.push(e.line);
      if (e.type === "metric" && e.step === 30) void run.cancel({ strategy: "interrupt" });
    }
    const result = await run;
    expect(result.status).toBe("canceled");
    expect(result.exitCode).toBe(0); // the trainer's own clean exit after its SIGTERM handler
    const saved = lines.find((l) => l.startsWith("SIGTERM_CHECKPOINT "));
    expect(saved).toBeDefined();
    const latest = await Runctl.checkpoints(storage, result.runId).latest();
    expect(latest?.step).toBe(Number(saved!.split(" ")[1]));
    expect(await latest!.verify()).toEqual({ ok: true, problems: [] });
  });

  it("setup runs inside the image: requirements from a mounted wheelhouse into a venv cached by image", async () => {
    const project = tempDir("ctr-req");
    const wheels = tempDir("ctr-wheels");
    buildDemoWheel("2.0.1", wheels);
    writeFileSync(join(project, "requirements.txt"), "runctl-demo-pkg==2.0.1\n");
    writeFileSync(join(project, "use.py"), "import sys, runctl_demo_pkg\nprint('PKG', runctl_demo_pkg.VERSION, sys.prefix)\n");
    const plan = Runctl.instance(local())
      .sync(project)
      .container(image, { host: daemon.host, pull: "never", mounts: [{ source: wheels, target: "/wheels", readOnly: true }] })
      .setup({ requirements: "requirements.txt", pip: { noIndex: true, findLinks: ["/wheels"] } });
    for (const reused of [false, true]) {
      const run = plan.train("use.py");
      const events: RunEvent[] = [];
      for await (const e of run) events.push(e);
      expect((await run).status).toBe("succeeded");
      expect(events.find((e) => e.type === "setup")).toMatchObject({ reused });
      const line = events.flatMap((e) => (e.type === "log" && e.line.startsWith("PKG ") ? [e.line] : []))[0];
      expect(line).toMatch(/^PKG 2\.0\.1 \/runctl\/venvs\/[0-9a-f]{16}$/);
    }
  });

  it('gpus: "all" on a machine without the NVIDIA runtime: GPU_UNAVAILABLE before anything starts', async () => {
    const run = Runctl.instance(local()).sync(FIXTURE_TRAINERS_DIR).container(image, { host: daemon.host, pull: "never", gpus: "all" }).train(FIXTURE_TRAINER);
    const events: RunEvent[] = [];
    for await (const e of run) events.push(e);
    const result = await run;
    expect(result.status).toBe("failed");
    expect(result.error?.code).toBe("GPU_UNAVAILABLE");
    expect(result.error?.message).toMatch(/gpus: "all" was asked for, but this machine has no NVIDIA GPU|no NVIDIA container runtime/);
    expect(phasesOf(events)).not.toContain("setup");
    expect(phasesOf(events)).not.toContain("training");
    expect(await containers()).toEqual([]);
    // "auto" (the default) on the same machine simply runs without GPUs.
    const auto = await Runctl.instance(local()).sync(FIXTURE_TRAINERS_DIR).container(image, { host: daemon.host, pull: "never" }).train(FIXTURE_TRAINER, { hyperparams: { steps: 3 } });
    expect(auto.status).toBe("succeeded");
  });

  it("a missing image says why: pull never, or the pull failed; an unreachable daemon is named", async () => {
    const base = Runctl.instance(local()).sync(FIXTURE_TRAINERS_DIR);
    const never = await base.container("runctl-test/absent:1", { host: daemon.host, pull: "never" }).train(FIXTURE_TRAINER);
    expect(never.error?.code).toBe("IMAGE_UNAVAILABLE");
    expect(never.error?.message).toContain('runctl-test/absent:1 is not on this machine and pull is "never"');
    // A registry on the daemon's own loopback (an empty network namespace): refused, nothing leaves.
    const pulled = await base.container("127.0.0.1:9/absent/x:1", { host: daemon.host }).train(FIXTURE_TRAINER);
    expect(pulled.error?.code).toBe("IMAGE_UNAVAILABLE");
    expect(pulled.error?.message).toContain("is not on this machine and pulling it failed");
    const down = await base.container(image, { host: `unix://${tempDir("no-daemon")}/docker.sock` }).train(FIXTURE_TRAINER);
    expect(down.error?.code).toBe("CONTAINER_RUNTIME_UNAVAILABLE");
  });

  it("an agent killed with SIGKILL leaves no container: its watcher removes the run's containers", async () => {
    const run = Runctl.instance(local()).sync(FIXTURE_TRAINERS_DIR).container(image, { host: daemon.host, pull: "never" }).train(FIXTURE_TRAINER, { hyperparams: { steps: 100_000, "sleep-per-step": 0.01 } });
    for await (const e of run) {
      if (e.type === "metric" && e.step === 5) {
        expect(await containers()).toHaveLength(1);
        const info = JSON.parse(readFileSync(join(home, "local", "runs", run.runId, "supervision.json"), "utf8")) as { agentPid: number };
        process.kill(info.agentPid, "SIGKILL");
      }
    }
    expect((await run).error?.code).toBe("AGENT_FAILED");
    for (let i = 0; i < 50 && (await containers()).length > 0; i++) await sleep(100);
    expect(await containers()).toEqual([]);
  });
});
