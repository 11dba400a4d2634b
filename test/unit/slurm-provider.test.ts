/**
 * The `slurm()` provider's pure parts: option checks (typed errors before anything connects, no
 * way to smuggle a line into the job script), the sbatch script (valid bash, every option runctl
 * promises), Slurm's records and rejections as runctl reads them, and the plan's refusals.
 */
import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { Runctl, isRunctlError, slurm } from "../../src/index.js";
import { resolveSlurmOptions } from "../../src/providers/slurm/slurm-options.js";
import { slurmScript, warningSeconds } from "../../src/providers/slurm/slurm-script.js";
import { jobRejected, parseScontrol, phaseOf, statusFromRecord } from "../../src/providers/slurm/slurm-status.js";

const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (err) {
    return isRunctlError(err) ? err.code : `not a RunctlError: ${String(err)}`;
  }
  return undefined;
};

const request = { runId: "20261205-120000-abcdef", jobDir: "/home/ml/.runctl/runs/20261205-120000-abcdef", nodes: 2, python: "python3", agentPath: "/home/ml/.runctl/agent/runctl-agent-0123.pyz", graceMs: 30_000, requeue: true };

describe("slurm() options", () => {
  it("refuses bad input with INVALID_ARGUMENT before connecting", () => {
    const bad: unknown[] = [
      {},
      { login: "" },
      { login: "ml@login", partition: "gpu\n#SBATCH --uid=0" },
      { login: "ml@login", partition: "a b" },
      { login: "ml@login", account: "x;rm -rf ~" },
      { login: "ml@login", qos: "" },
      { login: "ml@login", gresPerNode: "gpu:1 --x" },
      { login: "ml@login", timeLimit: -5 },
      { login: "ml@login", timeLimit: "soon" },
      { login: "ml@login", sbatchArgs: ["--nodes=4"] },
      { login: "ml@login", sbatchArgs: ["-N4"] },
      { login: "ml@login", sbatchArgs: ["--output=/tmp/x"] },
      { login: "ml@login", sbatchArgs: ["--time=10"] },
      // sbatch takes unique prefixes of long options: these would override runctl's own lines.
      { login: "ml@login", sbatchArgs: ["--partitio=x"] },
      { login: "ml@login", sbatchArgs: ["--comm=x"] },
      { login: "ml@login", sbatchArgs: ["--outp=/elsewhere"] },
      { login: "ml@login", sbatchArgs: ["--expor=NONE"] },
      { login: "ml@login", sbatchArgs: ["--no-kill"] },
      { login: "ml@login", sbatchArgs: ["--constraint=a b"] },
      { login: "ml@login", sbatchArgs: ["--mail-user=\"x\""] },
      { login: "ml@login", sbatchArgs: "--exclusive" },
      { login: "ml@login", workdir: "../elsewhere" },
      { login: "ml@login", workdir: "/scratch/my runs" },
      { login: "ml@login", pollMs: 5 },
      { login: "ml@login", partitions: "gpu" },
    ];
    for (const options of bad) expect(codeOf(() => slurm(options as never)), JSON.stringify(options)).toBe("INVALID_ARGUMENT");
  });

  it("accepts what Slurm users write", () => {
    const o = resolveSlurmOptions({ login: "ml@login:2222", partition: "gpu,gpu-long", account: "proj_42", qos: "high", gresPerNode: "gpu:a100:4", timeLimit: "2-00:00:00", sbatchArgs: ["--exclusive", "--constraint=a100", "--mem=0"], workdir: "/scratch/ml/runctl" });
    expect(o.login).toEqual({ host: "login", username: "ml", port: 2222 });
    expect(o.timeLimit).toBe("2-00:00:00");
    expect(resolveSlurmOptions({ login: "login", timeLimit: 90 * 60_000 + 1 }).timeLimit).toBe("91");
  });
});

describe("the sbatch script", () => {
  const o = resolveSlurmOptions({ login: "ml@login", partition: "gpu", account: "proj", qos: "high", gresPerNode: "gpu:4", sbatchArgs: ["--exclusive"] });

  it("asks for the gang, tags the job, warns before the time limit and starts one agent per node", () => {
    const script = slurmScript({ ...request, maxDurationMs: 2 * 3600_000 + 1 }, o);
    const directives = script.split("\n").filter((l) => l.startsWith("#SBATCH "));
    expect(directives).toEqual([
      "#SBATCH --job-name=runctl-20261205-120000-abcdef",
      "#SBATCH --comment=runctl:20261205-120000-abcdef",
      "#SBATCH --nodes=2",
      "#SBATCH --ntasks-per-node=1",
      `#SBATCH --chdir=${request.jobDir}`,
      `#SBATCH --output=${request.jobDir}/slurm-%j.out`,
      "#SBATCH --open-mode=append",
      "#SBATCH --requeue",
      "#SBATCH --signal=B:USR1@60",
      "#SBATCH --time=121",
      "#SBATCH --partition=gpu",
      "#SBATCH --account=proj",
      "#SBATCH --qos=high",
      "#SBATCH --gres=gpu:4",
      "#SBATCH --exclusive",
    ]);
    expect(script).toContain(`srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --kill-on-bad-exit=0 python3 ${request.agentPath} node "$job_dir" "$attempt" "$addrs" &`);
    expect(script).toContain('echo time-limit > "$job_dir/attempts/$attempt/stop"');
    execFileSync("bash", ["-n"], { input: script }); // valid bash
  });

  it("does not requeue without recovery, and quotes what it passes to the shell", () => {
    const script = slurmScript({ ...request, requeue: false, python: "/opt/py 3/bin/python3" }, resolveSlurmOptions({ login: "login" }));
    expect(script).toContain("#SBATCH --no-requeue");
    expect(script).not.toMatch(/--time=|--partition=/);
    expect(script).toContain("'/opt/py 3/bin/python3'");
    expect(warningSeconds(5000)).toBe(35);
    execFileSync("bash", ["-n"], { input: script });
  });
});

describe("Slurm's answers", () => {
  it("reads scontrol's one-line job record", () => {
    const line =
      "JobId=12 JobName=runctl-r1 UserId=rtb(1000) GroupId=rtb(1000) MCS_label=N/A Priority=4294901748 Nice=0 Account=(null) QOS=(null) JobState=PENDING Reason=BeginTime Dependency=(null) Requeue=1 Restarts=1 BatchFlag=1 Reboot=0 ExitCode=0:15 RunTime=00:00:00 TimeLimit=UNLIMITED NodeList= Comment=runctl:r1 ";
    const status = statusFromRecord("12", parseScontrol(line), []);
    expect(status).toEqual({ id: "12", phase: "pending", state: "PENDING", reason: "BeginTime", restarts: 1, hosts: [], exitCode: "0:15" });
    expect(statusFromRecord("12", parseScontrol("JobId=12 JobState=RUNNING Reason=None Restarts=0"), ["a", "b"]).reason).toBeUndefined();
    // COMPLETING is also what a requeued job shows until its steps have ended: not over yet.
    expect(["RUNNING", "CONFIGURING", "PENDING", "REQUEUED", "COMPLETING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED"].map(phaseOf)).toEqual([
      "running", "running", "pending", "pending", "completing", "ended", "ended", "ended", "ended", "ended", "ended",
    ]);
  });

  it("turns sbatch's rejections into JOB_REJECTED with Slurm's own message", () => {
    const cases: [string, string][] = [
      ["sbatch: error: invalid partition specified: nope\nsbatch: error: Batch job submission failed: Invalid partition name specified", "partition"],
      ["sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified", "account"],
      ["sbatch: error: Batch job submission failed: Invalid qos specification", "qos"],
      ["sbatch: error: Batch job submission failed: Invalid generic resource (gres) specification", "gres"],
      ["sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds some limit)", "time"],
      ["sbatch: error: Batch job submission failed: Requested node configuration is not available", "nodes"],
      ["sbatch: error: something new", "other"],
    ];
    for (const [stderr, reason] of cases) {
      const err = jobRejected(stderr, 1, "run r1's job");
      expect(err.code).toBe("JOB_REJECTED");
      expect(err.details?.["reason"]).toBe(reason);
      expect(err.message).toContain(stderr.split("\n").pop()!.trim());
    }
  });
});

describe("plans on slurm()", () => {
  const provider = slurm({ login: "ml@login.invalid" });

  it("refuses .container() (not supported on a cluster engine yet) at train, before anything connects", () => {
    const plan = Runctl.instance(provider).container("python:3.12");
    expect(codeOf(() => plan.train("train.py"))).toBe("UNSUPPORTED");
  });

  it("recovers without extra storage: checkpoints default to the shared filesystem", async () => {
    const summary = await Runctl.instance(provider).recover({ maxRestarts: 1 }).plan("train.py");
    expect(summary.batchScript).toContain("#SBATCH --requeue");
    expect(summary.steps[0]).toMatch(/sbatch --test-only/);
  });
});

describe("the CLI and slurm runs", () => {
  it("rebuilds the slurm provider from a run's journal (login node and folder, no secrets)", async () => {
    const { attachOptionsFor } = await import("../../src/cli/run-provider.js");
    const machine = { provider: "slurm", id: "ml@login:22", host: "login", port: 22, username: "ml", privateKeyPath: "/keys/id", knownHostsPath: "/keys/kh", rootDir: "/scratch/ml/runctl", jobId: "12" };
    const options = attachOptionsFor({ version: 1, runId: "r1", createdAt: "2026-12-05T00:00:00Z", provider: "slurm", script: "train.py", machine } as never);
    expect(options.provider?.name).toBe("slurm");
    const plan = options.provider?.plan?.({ runId: "r1" });
    expect(plan?.batchScript).toContain("#SBATCH --chdir=/scratch/ml/runctl/runs/r1");
    expect(plan?.resources[0]?.description).toContain("ml@login:22");
  });
});
