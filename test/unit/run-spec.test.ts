import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Runctl, local, localDir } from "runctl";
import { s3 } from "runctl/aws";
import { buildAgentSpec } from "../../src/engine/agent-spec.js";
import { buildRunSpec } from "../../src/plan/build-run-spec.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

const home = useTempRunctlHome("run-spec");

describe("the plan's RunSpec", () => {
  it("is plain JSON with every default applied; live objects stay in the resources, named by key", () => {
    const dir = tempDir("proj");
    writeFileSync(join(dir, "train.py"), "print('hi')\n");
    const ckpt = localDir(tempDir("ckpt"));
    const data = s3("s3://bucket/mnist", { endpoint: "http://127.0.0.1:9", region: "us-east-1", forcePathStyle: true });
    const plan = Runctl.instance(local())
      .sync(dir, { ignore: ["data/"] })
      .setup({ commands: ["true"] })
      .data(data, { to: "data" })
      .data("/datasets/x", { to: "x" })
      .outputs(tempDir("out"))
      .checkpoints({ storage: ckpt, keep: 2, dir: "ckpt" })
      .recover({ maxRestarts: 1 })
      .resumeFrom("older-run");
    const signal = new AbortController().signal;
    const { spec, resources } = buildRunSpec(plan.state, "train.py", { hyperparams: { lr: 0.1 }, args: ["--x"], metricPattern: /loss=(?<loss>\S+)/u, signal });

    expect(JSON.parse(JSON.stringify(spec))).toEqual(spec);
    expect(spec).toMatchObject({
      provider: "local",
      runId: null,
      trainerArgs: ["--lr=0.1", "--x"],
      graceMs: 30_000,
      costIntervalMs: 60_000,
      cleanup: false,
      cancelStrategy: "interrupt",
      metricPattern: { source: "loss=(?<loss>\\S+)", flags: "u" },
      sync: { dir, ignore: ["data/"], maxBytes: null, maxFiles: null },
      setup: { requirements: null, commands: ["true"], systemSitePackages: true, pip: { findLinks: [], noIndex: false, indexUrl: null, extraArgs: [] } },
      checkpoints: { storage: { key: "checkpoints", uri: ckpt.uri }, dir: "ckpt", keep: 2, settleMs: 2000 },
      budget: { maxDurationMs: null, maxUsd: null },
      recover: { maxRestarts: 1, onEvents: ["interruption", "host-lost"], backoffMs: 1000, hostLostAfterMs: 60_000, retryOnExitCodes: [] },
      resume: { runId: "older-run", name: null, storage: { kind: "dir" } },
    });
    expect(spec.data.map((d) => d.kind)).toEqual(["storage", "path"]);
    expect(spec.data[0]).toMatchObject({ storage: { key: "data:0", descriptor: { kind: "s3", bucket: "bucket", prefix: "mnist", endpoint: "http://127.0.0.1:9" } } });
    expect(resources.storages.get("checkpoints")).toBe(ckpt);
    expect(resources.storages.get("data:0")).toBe(data);
    expect([...resources.storages.keys()].sort()).toEqual(["checkpoints", "data:0", "outputs"]);
    expect(resources.signal).toBe(signal);

    // The agent's spec is built from it alone.
    const agentSpec = buildAgentSpec({ spec, runId: "r1", rootDir: "/m", workdir: "/m/runs/r1/code", mirrorDir: null, python: "python3", storage: spec.checkpoints.storage!.descriptor, resume: spec.resume, imds: undefined });
    expect(agentSpec.argv).toEqual(["train.py", "--lr=0.1", "--x"]);
    expect(agentSpec.data.map((d) => d.to)).toEqual(["/m/runs/r1/code/data", "/m/runs/r1/code/x"]);
    expect(agentSpec.checkpoints).toMatchObject({ dir: "/m/runs/r1/code/ckpt", keep: 2 });
  });

  it("falls back to $RUNCTL_HOME/checkpoints for machines that share this filesystem", () => {
    const { spec, resources } = buildRunSpec(Runctl.instance(local()).state, "t.py", { hyperparams: {} });
    expect(spec.checkpoints.storage).toMatchObject({ key: "checkpoints", descriptor: { kind: "dir", path: join(home, "checkpoints") } });
    expect(resources.storages.get("checkpoints")?.uri).toBe(spec.checkpoints.storage?.uri);
  });
});
