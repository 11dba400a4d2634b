import type { Machine } from "../../providers/types.js";
import { shellQuote } from "../../transport/shell-quote.js";
import type { DoctorCheck } from "../../util/doctor-check.js";
import { formatBytes } from "../../util/format-bytes.js";

/** The agent's floor (src/agent: stdlib only, 3.8 syntax). */
export const MIN_PYTHON: readonly [number, number] = [3, 8];

/** What a command on the machine answered, as the classifiers read it. */
export interface ProbeResult {
  readonly exitCode: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * `python3 >= 3.8` from `python -c 'print(version)'` (exit 127: not installed).
 *
 * @example
 * ```ts
 * pythonCheck("localhost", "python3", { exitCode: 0, stdout: "3.6.9\n", stderr: "" }).status; // "fail"
 * ```
 */
export function pythonCheck(where: string, python: string, r: ProbeResult): DoctorCheck {
  const base = { id: "python", title: `${python} >= ${MIN_PYTHON.join(".")} on ${where}` };
  const fix = `Install Python ${MIN_PYTHON.join(".")} or newer on ${where} (e.g. \`sudo apt-get install python3\`), or point the provider at one (python: "/path/to/python3").`;
  if (r.exitCode === 127) return { ...base, status: "fail", detail: `${python} not found`, fix };
  const m = /^(\d+)\.(\d+)\.(\d+)/.exec(r.stdout.trim());
  if (r.exitCode !== 0 || !m) return { ...base, status: "fail", detail: `${python} did not run (exit ${String(r.exitCode)}): ${r.stderr.trim().slice(-300)}`, fix };
  const [major, minor] = [Number(m[1]), Number(m[2])];
  const recent = major > MIN_PYTHON[0] || (major === MIN_PYTHON[0] && minor >= MIN_PYTHON[1]);
  return recent ? { ...base, status: "ok", detail: `Python ${m[0]}` } : { ...base, status: "fail", detail: `Python ${m[0]} is older than ${MIN_PYTHON.join(".")}`, fix };
}

/**
 * Whether the trainer's usual dependency (torch) imports. Missing is a warning: the run may install
 * it itself (`.pip()`, `.setup()`), and a trainer may not need it.
 *
 * @example
 * ```ts
 * torchCheck("localhost", { exitCode: 1, stdout: "", stderr: "ModuleNotFoundError: No module named 'torch'" }).status; // "warn"
 * ```
 */
export function torchCheck(where: string, r: ProbeResult): DoctorCheck {
  const base = { id: "torch", title: `trainer deps (torch) on ${where}` };
  const m = /^torch (\S+) cuda=(True|False)/m.exec(r.stdout);
  if (r.exitCode === 0 && m) return { ...base, status: "ok", detail: `torch ${m[1]}, CUDA ${m[2] === "True" ? "available" : "not available"}` };
  const missing = /No module named '?torch/.test(r.stderr);
  return {
    ...base,
    status: "warn",
    detail: missing ? "torch is not installed for this Python" : `import torch failed: ${r.stderr.trim().split("\n").slice(-1)[0] ?? ""}`,
    fix: "Fine if the run installs it (.pip([\"torch\"]) or .setup()) or does not use it; otherwise `python3 -m pip install torch` on the machine.",
  };
}

/**
 * Free space in the folder runs live in, from `df -Pk` (its last line: `fs 1024-blocks used available capacity mount`).
 *
 * @example
 * ```ts
 * diskCheck("localhost", "/home/me/.runctl", "/dev/sda1 100 50 40 50% /\n", { failBelow: 2 ** 30, warnBelow: 10 * 2 ** 30 }).status; // "fail"
 * ```
 */
export function diskCheck(where: string, dir: string, dfOutput: string, limits: { readonly failBelow: number; readonly warnBelow: number }): DoctorCheck {
  const base = { id: "disk", title: `free disk in ${dir} on ${where}` };
  const line = dfOutput.trim().split("\n").slice(-1)[0] ?? "";
  const fields = line.trim().split(/\s+/);
  const availableKb = Number(fields[3]);
  if (fields.length < 6 || !Number.isFinite(availableKb)) return { ...base, status: "warn", detail: `could not read df: ${JSON.stringify(line)}` };
  const free = availableKb * 1024;
  const detail = `${formatBytes(free)} free on ${fields.slice(5).join(" ")}`;
  const fix = `Free space on ${fields.slice(5).join(" ")} (runs, venvs and checkpoints live there), or set the provider's rootDir to a larger disk.`;
  if (free < limits.failBelow) return { ...base, status: "fail", detail: `${detail}, less than ${formatBytes(limits.failBelow)}`, fix };
  if (free < limits.warnBelow) return { ...base, status: "warn", detail: `${detail}, less than ${formatBytes(limits.warnBelow)}`, fix };
  return { ...base, status: "ok", detail };
}

/**
 * GPUs `nvidia-smi -L` lists. None is a warning, not a failure: a CPU target trains on CPU.
 *
 * @example
 * ```ts
 * gpuCheck("localhost", { exitCode: 0, stdout: "GPU 0: NVIDIA H100 (UUID: GPU-1)\n", stderr: "" }).detail; // "1 GPU: NVIDIA H100"
 * ```
 */
export function gpuCheck(where: string, r: ProbeResult): DoctorCheck {
  const base = { id: "gpu", title: `GPU visibility on ${where}` };
  if (r.exitCode === 127) return { ...base, status: "warn", detail: "no GPU visible (nvidia-smi not found); fine for training on CPU" };
  const gpus = [...r.stdout.matchAll(/^GPU \d+: (.+?)(?: \(UUID: [^)]*\))?$/gm)].map((m) => m[1]!);
  if (r.exitCode === 0 && gpus.length > 0) return { ...base, status: "ok", detail: `${gpus.length} GPU${gpus.length === 1 ? "" : "s"}: ${[...new Set(gpus)].join(", ")}` };
  if (r.exitCode === 0) return { ...base, status: "warn", detail: "nvidia-smi lists no GPU; fine for training on CPU" };
  return { ...base, status: "warn", detail: `nvidia-smi failed (exit ${String(r.exitCode)}): ${(r.stderr || r.stdout).trim().slice(-300)}`, fix: "Check the NVIDIA driver: `nvidia-smi` must list the GPUs (a reboot after a driver update often helps)." };
}

/**
 * Whether the agent can reach S3 from the machine: it uses boto3 when the interpreter has it, else
 * the aws CLI. The probe prints `boto3` and/or `aws-cli`.
 *
 * @example
 * ```ts
 * s3ToolsCheck("localhost", { exitCode: 0, stdout: "aws-cli\n", stderr: "" }).status; // "ok"
 * ```
 */
export function s3ToolsCheck(where: string, r: ProbeResult): DoctorCheck {
  const base = { id: "s3-tools", title: `boto3 or aws CLI on ${where} (S3 storage)` };
  const found = r.stdout.split("\n").map((l) => l.trim()).filter((l) => l === "boto3" || l === "aws-cli");
  if (found.length > 0) return { ...base, status: "ok", detail: `found ${found.join(" and ")}` };
  return { ...base, status: "fail", detail: "neither boto3 (for the agent's Python) nor the aws CLI is installed", fix: "Install one on the machine: `python3 -m pip install boto3`, or the AWS CLI (https://aws.amazon.com/cli/)." };
}

/** Options of {@link machineChecks}. */
export interface MachineCheckOptions {
  readonly signal?: AbortSignal | undefined;
  /** Free bytes below which the disk check fails. */
  readonly failBelow: number;
  /** Free bytes below which it warns. */
  readonly warnBelow: number;
  /** Check boto3 / aws CLI: a storage of the run is S3. */
  readonly s3: boolean;
}

/**
 * Python, torch, disk, GPU (and S3 tools) on a machine that exists, one command each. A command that
 * cannot run at all (the connection dropped) fails its check rather than the doctor.
 *
 * @example
 * ```ts
 * const checks = await machineChecks(machine, { failBelow: 2 ** 31, warnBelow: 10 * 2 ** 30, s3: false });
 * ```
 */
export async function machineChecks(machine: Machine, options: MachineCheckOptions): Promise<DoctorCheck[]> {
  const where = machine.id;
  const py = shellQuote(machine.python);
  const probe = async (script: string): Promise<ProbeResult> => {
    try {
      const r = await machine.transport.exec({ script }, options.signal ? { signal: options.signal } : {});
      return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderrTail };
    } catch (err) {
      if (options.signal?.aborted) throw err;
      return { exitCode: null, stdout: "", stderr: err instanceof Error ? err.message : String(err) };
    }
  };
  const orMissing = (cmd: string): string => `command -v ${cmd} >/dev/null 2>&1 || exit 127`;
  const checks: DoctorCheck[] = [];
  const python = pythonCheck(where, machine.python, await probe(`${orMissing(py)}; exec ${py} -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'`));
  checks.push(python);
  if (python.status === "ok") {
    checks.push(torchCheck(where, await probe(`exec ${py} -c 'import torch; print("torch %s cuda=%s" % (torch.__version__, torch.cuda.is_available()))'`)));
  }
  // The root folder may not exist before the first run: df the nearest folder that does.
  const df = await probe(`d=${shellQuote(machine.rootDir)}; while [ ! -d "$d" ]; do d=$(dirname "$d"); done; df -Pk "$d"`);
  checks.push(df.exitCode === 0 ? diskCheck(where, machine.rootDir, df.stdout, options) : { id: "disk", title: `free disk in ${machine.rootDir} on ${where}`, status: "warn", detail: `df failed: ${df.stderr.trim()}` });
  checks.push(gpuCheck(where, await probe(`${orMissing("nvidia-smi")}; exec nvidia-smi -L`)));
  if (options.s3) {
    checks.push(s3ToolsCheck(where, await probe(`${py} -c 'import boto3' >/dev/null 2>&1 && echo boto3; command -v aws >/dev/null 2>&1 && echo aws-cli; true`)));
  }
  return checks;
}
