import { posix } from "node:path";
import type { StorageDescriptor } from "../storage/types.js";
import type { HyperparamValue, RunSpec, RunSpecContainer } from "./run-spec.js";

/**
 * How often the agent asks the machine's metadata service for a spot notice, unless the machine says
 * otherwise: the service is local to the machine, and every second of detection is a second less to
 * save in.
 */
export const IMDS_POLL_MS = 500;

/** The `spec.json` the agent runs (docs/agent-protocol.md). */
export interface AgentSpec {
  readonly version: 1;
  readonly runId: string;
  readonly runDir: string;
  readonly workdir: string;
  readonly mirrorDir: string | null;
  readonly python: string;
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly hyperparams: Readonly<Record<string, HyperparamValue>>;
  readonly setup: {
    readonly requirements: string | null;
    readonly pip: { readonly findLinks: readonly string[]; readonly noIndex: boolean; readonly indexUrl: string | null; readonly extraArgs: readonly string[] };
    readonly systemSitePackages: boolean;
    readonly commands: readonly string[];
    readonly venvRoot: string;
  } | null;
  readonly data: readonly { readonly source: StorageDescriptor; readonly to: string }[];
  readonly dataDir: string | null;
  readonly outputDir: string;
  readonly outputs: { readonly storage: StorageDescriptor } | null;
  readonly checkpoints: { readonly dir: string; readonly storage: StorageDescriptor | null; readonly keep: number | null; readonly settleMs: number; readonly pollMs: number };
  readonly resume: { readonly storage: StorageDescriptor; readonly runId: string; readonly name: string | null } | null;
  readonly limits: {
    readonly maxDurationMs: number | null;
    readonly graceMs: number;
    /** Money left for this machine: stop once `(maxUsd - spentUsd) / hourlyUsd` hours have passed. */
    readonly budget: { readonly maxUsd: number; readonly hourlyUsd: number; readonly spentUsd: number } | null;
  };
  readonly shutdown: { readonly command: readonly string[]; readonly afterRunMs: number; readonly cancelBootPowerOff?: readonly string[] | undefined } | null;
  readonly interruption: { readonly imdsEndpoint: string; readonly pollMs: number } | null;
  /** Run setup steps and the trainer in this image (the agent stays on the machine); null: on the machine. */
  readonly container: RunSpecContainer | null;
  /** This machine's place in a multi-node gang; null: one machine. */
  readonly nodes: AgentNodes | null;
}

/** A node's view of its gang (docs/agent-protocol.md, `nodes`). */
export interface AgentNodes {
  /** This node's rank, 0-based. */
  readonly rank: number;
  readonly count: number;
  readonly procsPerNode: number;
  /** Rank 0's address, reachable from every node. */
  readonly masterAddr: string;
  readonly masterPort: number;
  /** Every node's address, by rank. */
  readonly addrs: readonly string[];
  readonly launcher: "torchrun" | "none";
}

/** Inputs of {@link buildAgentSpec}. */
export interface AgentSpecInput {
  readonly spec: RunSpec;
  readonly runId: string;
  readonly rootDir: string;
  /** The run's folder on the machine. @defaultValue `<rootDir>/runs/<runId>` */
  readonly runDir?: string | undefined;
  readonly workdir: string;
  readonly mirrorDir: string | null;
  readonly python: string;
  /** The checkpoint storage as the machine reaches it (the spec's, or one on the machine). */
  readonly storage: StorageDescriptor | null;
  readonly resume: AgentSpec["resume"];
  /** The machine's metadata service, if it has one. */
  readonly imds: { readonly endpoint: string; readonly pollMs?: number | undefined } | undefined;
  /** How the machine powers itself off, if it should (a cloud instance). */
  readonly shutdown?: { readonly command: readonly string[]; readonly afterRunMs: number; readonly cancelBootPowerOff?: readonly string[] | undefined } | undefined;
  /** This machine's price and what earlier machines of the run already cost. */
  readonly cost?: { readonly hourlyUsd: number; readonly spentUsd: number } | undefined;
  /** This machine's place in a gang (multi-node runs). */
  readonly nodes?: AgentNodes | undefined;
}

/** Turns a run's {@link RunSpec} into the agent's spec for one machine. Pure. */
export function buildAgentSpec(input: AgentSpecInput): AgentSpec {
  const { spec, runId, rootDir, workdir } = input;
  const runDir = input.runDir ?? posix.join(rootDir, "runs", runId);
  const inWorkdir = (p: string): string => (posix.isAbsolute(p) ? p : posix.join(workdir, p));
  const data = spec.data.map((d) => ({ source: d.kind === "path" ? { kind: "dir" as const, path: d.path } : d.storage.descriptor, to: inWorkdir(d.to) }));
  const maxUsd = spec.budget.maxUsd;
  return {
    version: 1,
    runId,
    runDir,
    workdir,
    mirrorDir: input.mirrorDir,
    python: input.python,
    // `./-V.py`, not `-V.py`: the interpreter must never read the script's path as one of its options.
    argv: [spec.script.startsWith("-") ? `./${spec.script}` : spec.script, ...spec.trainerArgs],
    env: spec.env,
    hyperparams: spec.hyperparams,
    setup: spec.setup ? { ...spec.setup, venvRoot: posix.join(rootDir, "venvs") } : null,
    data,
    dataDir: data[0]?.to ?? null,
    outputDir: posix.join(runDir, "outputs"),
    outputs: spec.outputs ? { storage: spec.outputs.descriptor } : null,
    checkpoints: {
      dir: spec.checkpoints.dir ? inWorkdir(spec.checkpoints.dir) : posix.join(runDir, "checkpoints"),
      storage: input.storage,
      keep: spec.checkpoints.keep,
      settleMs: spec.checkpoints.settleMs,
      pollMs: 250,
    },
    resume: input.resume,
    limits: {
      maxDurationMs: spec.budget.maxDurationMs,
      graceMs: spec.graceMs,
      budget: maxUsd !== null && input.cost && input.cost.hourlyUsd > 0 ? { maxUsd, hourlyUsd: input.cost.hourlyUsd, spentUsd: input.cost.spentUsd } : null,
    },
    shutdown: input.shutdown
      ? { command: input.shutdown.command, afterRunMs: input.shutdown.afterRunMs, cancelBootPowerOff: input.shutdown.cancelBootPowerOff }
      : null,
    interruption: input.imds ? { imdsEndpoint: input.imds.endpoint, pollMs: input.imds.pollMs ?? IMDS_POLL_MS } : null,
    container: spec.container,
    nodes: input.nodes ?? null,
  };
}
