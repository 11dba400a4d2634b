import { describe, expect, it } from "vitest";
import { Runctl, RunctlError, local, sshHosts } from "runctl";
import { s3 } from "runctl/aws";
import { buildAgentSpec } from "../../src/engine/agent-spec.js";
import { buildRunSpec } from "../../src/plan/build-run-spec.js";
import { useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("nodes-plan");

/** The error fn throws (undefined when it throws none). */
function thrown(fn: () => unknown): RunctlError | undefined {
  try {
    fn();
  } catch (err) {
    return err as RunctlError;
  }
  return undefined;
}

const host = (n: number) => ({ host: `10.0.0.${n}`, username: "u", privateKeyPath: "/nonexistent/key" });
const pool = sshHosts([host(1), host(2), host(3)]);

describe(".nodes(count, options)", () => {
  it("puts the gang, defaults applied, into the RunSpec; one node is no gang", () => {
    const { spec } = buildRunSpec(Runctl.instance(pool).nodes(2).state, "train.py", { hyperparams: {} });
    expect(spec.nodes).toEqual({ count: 2, procsPerNode: 1, masterPort: 29500, launcher: "torchrun", checkpointsFromNode: 0 });
    const withStorage = Runctl.instance(pool).checkpoints({ storage: s3("s3://bucket/ckpt", { region: "us-east-1" }) });
    const custom = buildRunSpec(withStorage.nodes(3, { procsPerNode: 4, masterPort: 29600, launcher: "none", checkpointsFromNode: 2 }).state, "t.py", { hyperparams: {} }).spec;
    expect(custom.nodes).toEqual({ count: 3, procsPerNode: 4, masterPort: 29600, launcher: "none", checkpointsFromNode: 2 });
    expect(buildRunSpec(Runctl.instance(pool).nodes(1).state, "t.py", { hyperparams: {} }).spec.nodes).toBeNull();
  });

  it("gives each agent its rank, rank 0's address and every address", () => {
    const { spec } = buildRunSpec(Runctl.instance(pool).nodes(2).state, "train.py", { hyperparams: {} });
    const nodes = { rank: 1, count: 2, procsPerNode: 1, masterAddr: "10.0.0.1", masterPort: 29500, addrs: ["10.0.0.1", "10.0.0.2"], launcher: "torchrun" as const };
    const agent = buildAgentSpec({ spec, runId: "r1", rootDir: "/home/u/.runctl", workdir: "/w", mirrorDir: null, python: "python3", storage: null, resume: null, imds: undefined, nodes });
    expect(agent.nodes).toEqual(nodes);
    expect(agent.checkpoints.storage).toBeNull();
  });

  it("refuses what can never run, at the call, before anything is created", () => {
    expect(thrown(() => Runctl.instance(local()).nodes(2))?.code).toBe("UNSUPPORTED");
    expect(thrown(() => Runctl.instance(local()).nodes(2))?.message).toContain("local provider is one machine");
    expect(thrown(() => Runctl.instance(pool).nodes(4))?.message).toContain("has only 3 machines");
    for (const [count, options] of [[0, {}], [1.5, {}], ["2", {}], [2, { procsPerNode: 0 }], [2, { masterPort: 70000 }], [2, { launcher: "mpirun" }], [2, { checkpointsFromNode: 2 }], [2, { gpus: 1 }]] as const) {
      const err = thrown(() => Runctl.instance(pool).nodes(count as never, options as never));
      expect(err, JSON.stringify([count, options])).toBeInstanceOf(RunctlError);
      expect(err?.code).toBe("INVALID_ARGUMENT");
    }
    expect(thrown(() => Runctl.instance(pool).nodes(2, { checkpointsFromNode: 1 }).train("train.py"))?.message).toContain("needs .checkpoints({ storage })");
    // Local runs of one node are fine.
    expect(Runctl.instance(local()).nodes(1).state.nodes?.count).toBe(1);
  });

  it("a recovering or resuming gang needs storage every node reaches", () => {
    const err = thrown(() => Runctl.instance(pool).nodes(2).recover().train("train.py"));
    expect(err?.code).toBe("INVALID_ARGUMENT");
    expect(err?.message).toContain("checkpoints");
    expect(thrown(() => Runctl.instance(pool).nodes(2).resumeFrom("older-run").train("train.py"))?.code).toBe("INVALID_ARGUMENT");
    const ok = Runctl.instance(pool).nodes(2).recover().checkpoints({ storage: s3("s3://bucket/ckpt", { region: "us-east-1" }) });
    expect(buildRunSpec(ok.state, "train.py", { hyperparams: {} }).spec.nodes?.count).toBe(2);
  });

  it("the dry run shows every machine of the gang", async () => {
    const summary = await Runctl.instance(pool).nodes(2, { procsPerNode: 2 }).plan("train.py");
    expect(summary.steps[0]).toBe("provision 2 machines from ssh-hosts as one gang (all or nothing)");
    expect(summary.steps).toContain("train train.py on 2 nodes with torchrun (2 process(es) per node, rendezvous on node 0 port 29500)");
    expect(summary.resources.filter((r) => r.description.startsWith("node 1: "))).toHaveLength(1);
  });
});
