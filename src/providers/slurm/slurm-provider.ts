import { posix } from "node:path";
import { RunctlError, throwIfAborted } from "../../errors/runctl-error.js";
import { recordResourceCreated } from "../../ledger/resource-ledger.js";
import { sshTransport } from "../../transport/ssh/ssh-transport.js";
import { sourceLogger } from "../../util/logger.js";
import type { ExecResult, Transport } from "../../transport/types.js";
import type { BatchCallOptions, BatchEngine, BatchJobRequest, BatchJobStatus } from "../batch-types.js";
import { homeDir, hostFromRecord, hostId, machineOf, type SshHost } from "../ssh-hosts/ssh-hosts-provider.js";
import type { Machine, MachineState, Provider, ProviderPlanRequest } from "../types.js";
import { resolveSlurmOptions, type ResolvedSlurmOptions, type SlurmOptions } from "./slurm-options.js";
import { slurmScript } from "./slurm-script.js";
import { isUnknownJob, jobRejected, parseScontrol, statusFromRecord } from "./slurm-status.js";
import { sweepSlurm } from "./slurm-sweep.js";

const ROOT = /^\/[A-Za-z0-9_.+/-]*$/;

/**
 * A Slurm cluster you already run, reached through its login node over SSH (host key verified).
 * A run is one batch job (`sbatch`) whose allocation is the run's gang (`.nodes(n)`, default 1):
 * `srun` starts runctl's agent on every node, which trains exactly as on an SSH host. The code, the
 * venvs and the run folders live on the cluster's shared filesystem under `workdir`; logs, metrics
 * and checkpoints are read through the login node. A job waiting in the queue is a `queued` phase
 * with Slurm's reason; `cancel` is `scancel --signal=TERM` (or `scancel` to kill); a job Slurm
 * requeues (preemption, `scontrol requeue`, a node failure) resumes from the newest verified
 * checkpoint with `.recover()`. Credentials are never forwarded to the nodes: storage must be
 * reachable from them on its own (an instance profile, the nodes' own AWS config, or the shared
 * filesystem). See docs/slurm.md.
 *
 * @example
 * ```ts
 * const cluster = slurm({ login: "ml@login.cluster", partition: "gpu", gresPerNode: "gpu:4" });
 * const run = Runctl.instance(cluster).sync("./").nodes(2).train("train.py");
 * ```
 */
export function slurm(options: SlurmOptions): Provider {
  const o = resolveSlurmOptions(options);
  const warn = options.onWarning ?? ((message: string) => process.emitWarning(message, "RunctlWarning"));
  const loginId = hostId(o.login);
  const log = sourceLogger(options.logger, "provider");
  const nodeMachines = new WeakSet<Machine>();

  const connect = async (host: SshHost, signal: AbortSignal | undefined): Promise<Machine> => {
    const transport = sshTransport({ ...host, logger: host.logger ?? options.logger, onWarning: host.onWarning ?? warn });
    try {
      await transport.connect(signal ? { signal } : {});
      const home = await homeDir(transport);
      const rootDir = o.workdir === undefined ? `${home}/.runctl` : o.workdir.startsWith("/") ? posix.normalize(o.workdir) : posix.join(home, o.workdir);
      if (!ROOT.test(rootDir)) {
        throw new RunctlError("INVALID_ARGUMENT", `slurm(): runctl's folder ${JSON.stringify(rootDir)} on ${loginId} has characters a job script cannot carry; set \`workdir\` to a plain path on the shared filesystem.`);
      }
      return loginMachine(host, transport, rootDir);
    } catch (err) {
      await transport.close().catch(() => {});
      throw err;
    }
  };

  const loginMachine = (host: SshHost, transport: Transport, rootDir: string): Machine => {
    const ssh = machineOf(host, transport, rootDir);
    // Slurm's machines cost nothing in runctl's reports; its agents are signalled through the job.
    return { ...ssh, provider: "slurm", record: { ...ssh.record, provider: "slurm" }, hourlyPriceUsd: 0, signalRun: (runDir, how) => signalRun(transport, runDir, how) };
  };

  const batch: BatchEngine = {
    scheduler: "slurm",
    pollMs: o.pollMs,
    script: (request) => slurmScript(request, o),
    async check(login, request, opts) {
      // The same options as the real job, nothing submitted: Slurm's verdict before any sync.
      const r = await exec(login.transport, ["sbatch", "--test-only"], opts, slurmScript(request, o));
      if (r.exitCode === 127) throw new RunctlError("UNSUPPORTED", `sbatch is not on the PATH of ${login.address}: is it a Slurm login node? ${r.stderrTail.trim()}`);
      if (r.exitCode !== 0) throw jobRejected(r.stderrTail, r.exitCode, `run ${request.runId}'s job`);
      // A requeue or preemption TERMs the agents and SIGKILLs everything KillWait seconds later:
      // the trainer's grace and the commit must fit in it.
      const config = await exec(login.transport, ["scontrol", "show", "config"], opts);
      const killWaitS = Number(/^KillWait\s*=\s*(\d+)/m.exec(config.stdout)?.[1] ?? Number.NaN);
      const warnings: string[] = [];
      if (Number.isFinite(killWaitS) && request.graceMs + 10_000 > killWaitS * 1000) {
        warnings.push(`Slurm's KillWait on this cluster is ${killWaitS} s: when the job is requeued or preempted, the trainer's ${Math.round(request.graceMs / 1000)} s grace and the checkpoint's commit must fit in it, or they are killed. Lower graceMs, or ask for a longer KillWait (or partition GraceTime).`);
      }
      return { warnings };
    },
    async submit(login, request, opts) {
      const scriptPath = `${request.jobDir}/job.sh`;
      const write = await exec(login.transport, ["sh", "-c", 'umask 077 && mkdir -p -- "$1" && cat > "$2.tmp" && mv -f -- "$2.tmp" "$2"', "sh", request.jobDir, scriptPath], opts, slurmScript(request, o));
      if (write.exitCode !== 0) throw new RunctlError("COMMAND_FAILED", `Could not write ${scriptPath} on ${login.address}: ${write.stderrTail.trim()}`);
      // Not abortable: a cancel while sbatch runs must not lose the id of a job Slurm has accepted.
      const r = await exec(login.transport, ["sbatch", "--parsable", scriptPath], undefined);
      if (r.exitCode !== 0) throw jobRejected(r.stderrTail, r.exitCode, `run ${request.runId}'s job`);
      const id = r.stdout.trim().split(";")[0] ?? "";
      if (!/^\d+$/.test(id)) throw new RunctlError("COMMAND_FAILED", `sbatch on ${login.address} printed no job id: ${JSON.stringify(r.stdout.slice(0, 200))}`);
      // Recorded the moment Slurm accepted it: `runctl sweep` finds it even if this process dies now.
      recordResourceCreated({
        kind: "job",
        id: `${id}@${loginId}`,
        provider: "slurm",
        runId: request.runId,
        createdAt: new Date().toISOString(),
        tags: { "runctl:run-id": request.runId, "slurm:job-id": id, "slurm:login": loginId, "slurm:job-dir": request.jobDir, ...loginTags(o.login, login.rootDir) },
      });
      log.info(`slurm ${loginId}: job ${id} submitted for run ${request.runId}`, { jobDir: request.jobDir });
      return id;
    },
    status: (login, jobId, opts) => jobStatus(login.transport, jobId, opts),
    async requeue(login, jobId, opts) {
      const r = await exec(login.transport, ["scontrol", "requeue", jobId], opts);
      if (r.exitCode !== 0) throw new RunctlError("COMMAND_FAILED", `scontrol requeue ${jobId} failed on ${login.address}: ${r.stderrTail.trim()}`);
    },
    cancel: (login, jobId, opts) => cancelJob(login.transport, jobId, [], opts),
    async outputTail(login, jobDir, jobId, opts) {
      const r = await exec(login.transport, ["tail", "-c", "3000", `${jobDir}/slurm-${jobId}.out`], opts);
      return r.exitCode === 0 ? r.stdout : "";
    },
    nodeMachine(login, host, rank, jobId) {
      const machine: Machine = { ...login, id: `${jobId}/node${rank}`, address: host, privateAddress: host };
      nodeMachines.add(machine);
      return machine;
    },
  };

  return {
    name: "slurm",
    ...(options.logger !== undefined ? { logger: options.logger } : {}),
    sharesLocalFilesystem: false,
    // The agents run in a job Slurm starts: no stdin of the client reaches them, so credentials are
    // never forwarded (storage must be reachable from the nodes on its own).
    stdinLeavesCopy: true,
    batch,
    provision: (_request, opts) => connect(o.login, opts?.signal),
    async release(machine) {
      // A node of a job is the login machine's transport: only the login machine closes it.
      if (nodeMachines.has(machine)) return;
      await machine.transport.close().catch(() => {});
    },
    async describe(machine, opts): Promise<MachineState> {
      if (!nodeMachines.has(machine)) {
        const r = await Promise.resolve(machine.transport.exec(["true"], opts?.signal ? { signal: opts.signal } : {})).catch(() => undefined);
        return r?.exitCode === 0 ? "running" : "unreachable";
      }
      const jobId = machine.id.split("/")[0]!;
      const s = await jobStatus(machine.transport, jobId, opts).catch(() => undefined);
      // An unreachable login node says nothing of the job: Slurm keeps running it, so the engine
      // keeps waiting rather than counting its nodes as lost (and requeueing a healthy job).
      if (!s) return "running";
      return s.phase === "running" || s.phase === "completing" ? "running" : s.phase === "pending" ? "pending" : "terminated";
    },
    transportFor(record) {
      const host = record.id === loginId ? o.login : hostFromRecord(record);
      return sshTransport({ ...host, logger: host.logger ?? options.logger, onWarning: host.onWarning ?? warn });
    },
    reattach: (record, opts) => connect(record.id === loginId ? o.login : hostFromRecord(record), opts?.signal),
    plan(request?: ProviderPlanRequest) {
      const runId = request?.runId ?? "<run-id>";
      // The home folder is read on the login node at the run; the plan names it as a placeholder.
      const root = o.workdir === undefined ? "<home>/.runctl" : o.workdir.startsWith("/") ? o.workdir : `<home>/${o.workdir}`;
      const nodes = request?.nodes ?? 1;
      const script = slurmScript(
        {
          runId,
          jobDir: `${root}/runs/${runId}`,
          nodes,
          python: o.login.python ?? "python3",
          agentPath: request?.agentPathOn?.(root) ?? `${root}/agent/runctl-agent.pyz`,
          maxDurationMs: request?.maxDurationMs,
          graceMs: request?.graceMs ?? 30_000,
          requeue: request?.recover === true,
        },
        o,
      );
      return {
        resources: [{ kind: "job", description: `one Slurm batch job of ${nodes} node(s)${o.partition ? ` in partition ${o.partition}` : ""}${o.gresPerNode ? ` with --gres=${o.gresPerNode} per node` : ""}, submitted on ${loginId}`, tags: { comment: `runctl:${runId}` } }],
        hourlyPriceUsd: 0,
        batchScript: script,
        steps: {
          before: [`connect to the login node ${loginId}; ask Slurm whether it accepts the job (sbatch --test-only)`],
          after: [`submit the job (sbatch); wait while it is queued; srun starts the agent on ${nodes} node(s)`],
        },
      };
    },
    sweep: (sweepOptions) => sweepSlurm({ connect: (signal) => connect(o.login, signal), batch, loginId }, sweepOptions),
  };
}

/** Connection facts of the login node for the ledger (no secrets: keys are paths). */
function loginTags(host: SshHost, rootDir: string): Record<string, string> {
  return {
    "slurm:host": host.host,
    "slurm:port": String(host.port ?? 22),
    "slurm:root": rootDir,
    ...(host.username ? { "slurm:username": host.username } : {}),
    ...(host.privateKeyPath ? { "slurm:private-key-path": host.privateKeyPath } : {}),
    ...(host.knownHostsPath ? { "slurm:known-hosts-path": host.knownHostsPath } : {}),
  };
}

async function exec(transport: Transport, argv: readonly string[], opts: BatchCallOptions | undefined, stdin?: string): Promise<ExecResult> {
  throwIfAborted(opts?.signal);
  return await transport.exec(argv, { ...(opts?.signal ? { signal: opts.signal } : {}), ...(stdin !== undefined ? { stdin } : {}) });
}

/** The job's status from `scontrol`; a job Slurm no longer knows is `gone`. */
async function jobStatus(transport: Transport, jobId: string, opts: BatchCallOptions | undefined): Promise<BatchJobStatus> {
  const r = await exec(transport, ["scontrol", "-o", "show", "job", jobId], opts);
  if (r.exitCode !== 0) {
    if (isUnknownJob(r.stderrTail)) return { id: jobId, phase: "gone", state: "GONE", reason: undefined, restarts: 0, hosts: [], exitCode: undefined };
    throw new RunctlError("COMMAND_FAILED", `scontrol show job ${jobId} failed (exit ${r.exitCode}): ${r.stderrTail.trim()}`, { retryable: true });
  }
  const record = parseScontrol(r.stdout.split("\n")[0] ?? "");
  const nodeList = record["NodeList"];
  let hosts: string[] = [];
  if (record["JobState"] === "RUNNING" && nodeList && nodeList !== "(null)") {
    const h = await exec(transport, ["scontrol", "show", "hostnames", nodeList], opts);
    if (h.exitCode === 0) hosts = h.stdout.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  }
  return statusFromRecord(jobId, record, hosts);
}

async function cancelJob(transport: Transport, jobId: string, extra: readonly string[], opts: BatchCallOptions | undefined): Promise<void> {
  const r = await exec(transport, ["scancel", ...extra, jobId], opts);
  if (r.exitCode === 0) return;
  // A job that is already over needs no cancel.
  const s = await jobStatus(transport, jobId, opts).catch(() => undefined);
  if (s && (s.phase === "ended" || s.phase === "gone")) return;
  throw new RunctlError("COMMAND_FAILED", `scancel ${[...extra, jobId].join(" ")} failed (exit ${r.exitCode}): ${r.stderrTail.trim()}`);
}

/**
 * Stops the agents of one attempt: the stop marker in the attempt's folder says why (`cancel` or
 * `kill`, read by every node's agent when its SIGTERM arrives), then `scancel --signal=TERM` (the
 * job's steps: each agent stops its trainer and commits) or `scancel` (the whole job).
 */
async function signalRun(transport: Transport, runDir: string, how: "interrupt" | "kill"): Promise<void> {
  const attemptDir = posix.dirname(runDir);
  const jobId = /^(\d+)\.\d+$/.exec(posix.basename(attemptDir))?.[1];
  if (!jobId) throw new RunctlError("INVALID_ARGUMENT", `${runDir} is not a node folder of a Slurm job's attempt.`);
  const word = how === "kill" ? "kill" : "cancel";
  const mark = await exec(transport, ["sh", "-c", 'printf "%s\\n" "$2" > "$1/stop.tmp" && mv -f -- "$1/stop.tmp" "$1/stop"', "sh", attemptDir, word], undefined);
  if (mark.exitCode !== 0) throw new RunctlError("COMMAND_FAILED", `Could not write the stop marker in ${attemptDir}: ${mark.stderrTail.trim()}`);
  await cancelJob(transport, jobId, how === "kill" ? [] : ["--signal=TERM"], undefined);
}
