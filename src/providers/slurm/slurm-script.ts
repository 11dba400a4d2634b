import { shellQuote } from "../../util/shell-quote.js";
import type { BatchJobRequest } from "../batch-types.js";
import { slurmMinutes, type ResolvedSlurmOptions } from "./slurm-options.js";

/** Seconds of warning before the time limit: the trainer's grace, plus time to commit the checkpoint. */
export function warningSeconds(graceMs: number): number {
  return Math.min(65_535, Math.ceil(graceMs / 1000) + 30);
}

/** The job's `#SBATCH` options, in the order they appear in the script. */
export function sbatchOptions(request: BatchJobRequest, options: ResolvedSlurmOptions): string[] {
  const time = request.maxDurationMs !== undefined ? slurmMinutes(request.maxDurationMs) : options.timeLimit;
  return [
    `--job-name=runctl-${request.runId}`,
    // How `sweep` tells runctl's jobs (and which run) from everything else in the queue.
    `--comment=runctl:${request.runId}`,
    `--nodes=${request.nodes}`,
    "--ntasks-per-node=1",
    `--chdir=${request.jobDir}`,
    `--output=${request.jobDir}/slurm-%j.out`,
    // A requeued job writes on after its earlier attempts instead of truncating them.
    "--open-mode=append",
    request.requeue ? "--requeue" : "--no-requeue",
    // USR1, not TERM, for the batch shell: Slurm also TERMs it on a requeue or a cancel, which is no time limit.
    `--signal=B:USR1@${warningSeconds(request.graceMs)}`,
    ...(time !== undefined ? [`--time=${time}`] : []),
    ...(options.partition !== undefined ? [`--partition=${options.partition}`] : []),
    ...(options.account !== undefined ? [`--account=${options.account}`] : []),
    ...(options.qos !== undefined ? [`--qos=${options.qos}`] : []),
    ...(options.gresPerNode !== undefined ? [`--gres=${options.gresPerNode}`] : []),
    ...options.sbatchArgs,
  ];
}

/**
 * The batch script of one run (docs/slurm.md): its allocation is the run's gang, and one `srun` step
 * starts runctl's agent on every node in the foreground (`agent node`), with the attempt's name
 * (`<job id>.<restart count>`, so a requeued job gets fresh run folders) and the nodes' host names.
 * Slurm's warning before the time limit writes the `time-limit` stop marker and TERMs every node's
 * agent, which stops the trainer and commits its final checkpoint.
 */
export function slurmScript(request: BatchJobRequest, options: ResolvedSlurmOptions): string {
  const n = request.nodes;
  const lines = [
    "#!/bin/bash",
    `# runctl run ${request.runId}: one Slurm job whose allocation is the run's ${n} node(s); srun starts`,
    "# runctl's agent on every node, in the foreground. Written by runctl; see docs/slurm.md.",
    ...sbatchOptions(request, options).map((o) => `#SBATCH ${o}`),
    "set -u",
    `job_dir=${shellQuote(request.jobDir)}`,
    'attempt="$SLURM_JOB_ID.${SLURM_RESTART_COUNT:-0}"',
    'mkdir -p -m 700 "$job_dir/attempts/$attempt"',
    'addrs="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | paste -sd, -)"',
    'echo "runctl: job $SLURM_JOB_ID attempt $attempt on $addrs"',
    "on_time_limit() {",
    '  echo "runctl: the time limit is near: stopping the trainers"',
    '  echo time-limit > "$job_dir/attempts/$attempt/stop"',
    '  scancel --signal=TERM "$SLURM_JOB_ID"',
    "}",
    "trap on_time_limit USR1",
    `srun --nodes=${n} --ntasks=${n} --ntasks-per-node=1 --kill-on-bad-exit=0 ${shellQuote(request.python)} ${shellQuote(request.agentPath)} node "$job_dir" "$attempt" "$addrs" &`,
    "step=$!",
    "# wait returns early when the trap runs: keep waiting for srun's own status.",
    'while :; do wait "$step"; rc=$?; kill -0 "$step" 2>/dev/null || break; done',
    'echo "runctl: srun exited with status $rc"',
    'exit "$rc"',
  ];
  return `${lines.join("\n")}\n`;
}
