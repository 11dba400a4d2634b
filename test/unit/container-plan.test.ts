import { describe, expect, it } from "vitest";
import { CONTAINER_PATHS, Runctl, RunctlError, local, sshHosts } from "runctl";
import { buildAgentSpec } from "../../src/engine/agent-spec.js";
import { buildRunSpec } from "../../src/plan/build-run-spec.js";
import { useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("container-plan");

/** The error fn throws (undefined when it throws none). */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

const base = Runctl.instance(sshHosts({ host: "127.0.0.1", username: "u", privateKeyPath: "/nonexistent/key" }));

describe(".container(image, options)", () => {
  it("puts the image and its options, defaults applied, into the RunSpec and the agent's spec.json", () => {
    const volume = { mountPoint: "/mnt/ebs-data", device: "/dev/nvme1n1" };
    const plan = base.container("ghcr.io/org/train:1.2@sha256:" + "a".repeat(64), {
      mounts: [{ source: volume, target: "/data", readOnly: true }, { source: "/scratch/./x/", target: "/scratch" }],
      gpus: 2,
      shmSize: "8g",
      env: { NCCL_DEBUG: "INFO" },
    });
    const { spec } = buildRunSpec(plan.state, "train.py", { hyperparams: {} });
    expect(spec.container).toEqual({
      image: "ghcr.io/org/train:1.2@sha256:" + "a".repeat(64),
      runtime: "docker",
      pull: "missing",
      gpus: 2,
      network: "host",
      shmSize: "8g",
      user: null,
      host: null,
      env: { NCCL_DEBUG: "INFO" },
      mounts: [
        { source: "/mnt/ebs-data", target: "/data", readOnly: true },
        { source: "/scratch/x", target: "/scratch", readOnly: false },
      ],
    });
    const agent = buildAgentSpec({ spec, runId: "r1", rootDir: "/home/u/.runctl", workdir: "/home/u/.runctl/runs/r1/code", mirrorDir: null, python: "python3", storage: null, resume: null, imds: undefined });
    expect(agent.container).toEqual(spec.container);
    expect(CONTAINER_PATHS).toMatchObject({ code: "/runctl/code", checkpoints: "/runctl/checkpoints", data: "/runctl/data", outputs: "/runctl/outputs" });
    // Without .container() the trainer runs on the machine, as before.
    expect(buildRunSpec(base.state, "train.py", { hyperparams: {} }).spec.container).toBeNull();
  });

  it("is immutable: the base plan is unchanged, and a later call replaces the image", () => {
    const a = base.container("python:3.11");
    const b = a.container("python:3.12", { network: "none" });
    expect(base.state.container).toBeUndefined();
    expect(a.state.container?.image).toBe("python:3.11");
    expect(b.state.container).toMatchObject({ image: "python:3.12", network: "none" });
  });

  it("rejects bad input at the call with INVALID_ARGUMENT, naming what is wrong", () => {
    const bad: [string, unknown, string][] = [
      ["", {}, "image must be a reference"],
      ["--privileged", {}, "image must be a reference"],
      ["python:3 ; rm -rf /", {}, "image must be a reference"],
      ["python:3", { gpus: 0 }, "gpus"],
      ["python:3", { gpus: "some" }, "gpus"],
      ["python:3", { shmSize: "8 GB" }, "shmSize"],
      ["python:3", { network: "host --privileged" }, "network"],
      ["python:3", { runtime: "lxc" }, "runtime"],
      ["python:3", { pull: "sometimes" }, "pull"],
      ["python:3", { user: "root;id" }, "user"],
      ["python:3", { privileged: true }, "privileged"],
      ["python:3", { env: { "1BAD": "x" } }, "1BAD"],
      ["python:3", { env: { RUNCTL_RUN_ID: "x" } }, "reserved"],
      ["python:3", { mounts: [{ source: "relative/dir", target: "/d" }] }, "absolute path"],
      ["python:3", { mounts: [{ source: "/a,b=c", target: "/d" }] }, "without commas"],
      ["python:3", { mounts: [{ source: "/data/../etc", target: "/d" }] }, '".."'],
      ["python:3", { mounts: [{ source: "/data", target: "/runctl/checkpoints" }] }, "under /runctl"],
      ["python:3", { mounts: [{ source: "/data", target: "/" }] }, "under /runctl"],
      ["python:3", { mounts: [{ source: "/a", target: "/d" }, { source: "/b", target: "/d/" }] }, "mounted twice"],
      ["python:3", { mounts: [{ source: { mountPoint: 7 }, target: "/d" }] }, "absolute path"],
      ["python:3", { mounts: [{ source: "/a", target: "/d", readOnly: "yes" }] }, "readOnly"],
      ["python:3", { mounts: [{ source: "/a", target: "/d", rw: true }] }, "unknown option rw"],
    ];
    for (const [image, options, text] of bad) {
      const err = thrown(() => base.container(image, options as never));
      expect(err, `${image} ${JSON.stringify(options)}`).toBeInstanceOf(RunctlError);
      expect((err as RunctlError).code).toBe("INVALID_ARGUMENT");
      expect((err as RunctlError).message).toContain(text);
    }
  });

  it("shows in the dry run", async () => {
    const summary = await base.container("python:3.11", { pull: "never" }).plan("train.py");
    expect(summary.steps).toContain("use the image python:3.11 (docker, pull never, gpus auto); setup and training run in it");
  });

  it("works with every provider: local runs use it too", () => {
    const { spec } = buildRunSpec(Runctl.instance(local()).container("python:3.11", { network: "none" }).state, "train.py", { hyperparams: {} });
    expect(spec.container?.network).toBe("none");
  });
});
