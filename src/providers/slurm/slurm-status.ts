import { RunctlError } from "../../errors/runctl-error.js";
import type { BatchJobPhase, BatchJobStatus } from "../batch-types.js";

/** `Key=Value` fields of one `scontrol -o show …` record (values without blanks are exact). */
export function parseScontrol(line: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const word of line.trim().split(/\s+/)) {
    const eq = word.indexOf("=");
    if (eq > 0) fields[word.slice(0, eq)] = word.slice(eq + 1);
  }
  return fields;
}

const PENDING = new Set(["PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT", "RESV_DEL_HOLD"]);
const RUNNING = new Set(["RUNNING", "CONFIGURING", "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT"]);

/** Slurm's job state word as a {@link BatchJobPhase}. */
export function phaseOf(state: string): BatchJobPhase {
  if (PENDING.has(state)) return "pending";
  if (RUNNING.has(state)) return "running";
  // A requeued or preempted job is PENDING|COMPLETING, which scontrol shows as COMPLETING (with
  // Restarts already counted) until its steps and epilog have ended: not over yet.
  if (state === "COMPLETING") return "completing";
  return "ended"; // COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, PREEMPTED, BOOT_FAIL, DEADLINE, OUT_OF_MEMORY
}

/** A job's status from its `scontrol -o show job` record; `hosts` come expanded from the caller. */
export function statusFromRecord(id: string, record: Record<string, string>, hosts: readonly string[]): BatchJobStatus {
  const state = (record["JobState"] ?? "UNKNOWN").replace(/\+$/, "");
  const reason = record["Reason"];
  return {
    id,
    phase: phaseOf(state),
    state,
    reason: reason && reason !== "None" ? reason : undefined,
    restarts: Number.parseInt(record["Restarts"] ?? "0", 10) || 0,
    hosts,
    exitCode: record["ExitCode"],
  };
}

/** What `scontrol show job` says of a job it no longer (or never) knew. */
export function isUnknownJob(stderr: string): boolean {
  return /Invalid job id specified/i.test(stderr);
}

/** Why Slurm rejected a job, from sbatch's message. */
export function rejectionReason(message: string): "partition" | "account" | "qos" | "gres" | "time" | "nodes" | "other" {
  // "Invalid account or account/partition combination": the account, checked first.
  if (/account/i.test(message)) return "account";
  if (/partition/i.test(message)) return "partition";
  if (/qos/i.test(message)) return "qos";
  if (/gres|generic resource|TRES/i.test(message)) return "gres";
  if (/time limit/i.test(message)) return "time";
  if (/node count|node configuration|nodes? (?:requested|available)/i.test(message)) return "nodes";
  return "other";
}

/** sbatch's rejection as a typed error carrying Slurm's own message. */
export function jobRejected(stderr: string, exitCode: number | null, what: string): RunctlError {
  const message = stderr
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "")
    .join("; ");
  const reason = rejectionReason(message);
  return new RunctlError("JOB_REJECTED", `Slurm rejected ${what}: ${message || `sbatch exited with ${exitCode}`}`, {
    details: { scheduler: "slurm", reason, slurmMessage: message, exitCode },
  });
}
