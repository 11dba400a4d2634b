import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Runctl, local, sshHosts, type Provider, type RecoverOptions } from "runctl";
import { s3 } from "runctl/aws";
import { buildAgentSpec } from "../../src/engine/agent-spec.js";
import type { RunContext } from "../../src/engine/run-context.js";
import { canPrepareAhead } from "../../src/engine/standby.js";
import { buildRunSpec } from "../../src/plan/build-run-spec.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("standby");

const storage = s3("s3://bucket/ckpt", { endpoint: "http://127.0.0.1:9", region: "us-east-1", forcePathStyle: true });
const pool = (n: number): Provider => sshHosts(Array.from({ length: n }, (_, i) => ({ host: `10.255.0.${i + 1}`, username: "ml" })));

/** The parts of a run's context that decide whether a spot notice may prepare a replacement. */
function contextOf(provider: Provider, shape: { readonly recover?: RecoverOptions | false; readonly nodes?: number; readonly storage?: boolean } = {}): RunContext {
  const dir = tempDir("proj");
  writeFileSync(join(dir, "train.py"), "print('hi')\n");
  let plan = Runctl.instance(provider).sync(dir);
  if (shape.storage !== false) plan = plan.checkpoints({ storage });
  if (shape.recover !== false) plan = plan.recover(shape.recover ?? {});
  if (shape.nodes) plan = plan.nodes(shape.nodes);
  const { spec, resources } = buildRunSpec(plan.state, "train.py", { hyperparams: {}, signal: new AbortController().signal });
  return { spec, resources, checkpoints: spec.checkpoints.storage ? { storage: undefined, descriptor: spec.checkpoints.storage.descriptor } : undefined } as unknown as RunContext;
}

describe("preparing a replacement during a spot notice", () => {
  it("is done for a single-machine run that recovers from interruptions, on a provider with a second machine, while restarts are left", () => {
    const ctx = contextOf(pool(2), { recover: { maxRestarts: 2 } });
    expect(canPrepareAhead(ctx, 0)).toBe(true);
    expect(canPrepareAhead(ctx, 1)).toBe(true);
    expect(canPrepareAhead(ctx, 2)).toBe(false);
  });

  it("is not done where no second machine can be held at once, for a gang, or without recovery from interruptions", () => {
    expect(canPrepareAhead(contextOf(pool(1)), 0)).toBe(false);
    expect(canPrepareAhead(contextOf(local(), { storage: true }), 0)).toBe(false);
    expect(canPrepareAhead(contextOf(pool(3), { nodes: 2 }), 0)).toBe(false);
    expect(canPrepareAhead(contextOf(pool(2), { recover: { onEvents: ["host-lost"] } }), 0)).toBe(false);
    expect(canPrepareAhead(contextOf(pool(2), { recover: false }), 0)).toBe(false);
  });
});

describe("the agent's spot-notice poll", () => {
  it("asks the metadata service every second unless the machine says otherwise", () => {
    const { spec } = buildRunSpec(Runctl.instance(local()).state, "train.py", { hyperparams: {}, signal: new AbortController().signal });
    const base = { spec, runId: "r1", rootDir: "/m", workdir: "/m/w", mirrorDir: null, python: "python3", storage: null, resume: null } as const;
    expect(buildAgentSpec({ ...base, imds: { endpoint: "http://169.254.169.254" } }).interruption).toEqual({ imdsEndpoint: "http://169.254.169.254", pollMs: 500 });
    expect(buildAgentSpec({ ...base, imds: { endpoint: "http://169.254.169.254", pollMs: 200 } }).interruption).toEqual({ imdsEndpoint: "http://169.254.169.254", pollMs: 200 });
    expect(buildAgentSpec({ ...base, imds: undefined }).interruption).toBeNull();
  });
});
