import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";

/** Result of {@link sh}. */
export interface ShResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a program (no shell) and returns its output; throws on a non-zero exit unless `allowFail`.
 *
 * @example
 * ```ts
 * const { stdout } = await sh("ip", ["-j", "route", "get", "10.77.0.10"]);
 * ```
 */
export function sh(
  file: string,
  args: readonly string[],
  options: { readonly allowFail?: boolean; readonly input?: string; readonly timeoutMs?: number } = {},
): Promise<ShResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      [...args],
      { encoding: "utf8", maxBuffer: 64 * 1024 * 1024, timeout: options.timeoutMs ?? 120_000, env: { ...process.env, LC_ALL: "C" } },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
        if (code !== 0 && !options.allowFail) {
          reject(new Error(`${file} ${args.join(" ")} failed (${code}): ${stderr.trim() || stdout.trim() || String(error?.message)}`));
          return;
        }
        resolve({ code, stdout, stderr });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
    else child.stdin?.end();
  });
}

/** Sleeps. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Whether a process is alive: it exists and is not a zombie (`kill -0` succeeds on zombies, so the state
 * letter in /proc/PID/stat is read instead). When `startTime` is given, the process must also have that
 * start time (field 22 of /proc/PID/stat), which guards against a recycled pid.
 */
export function processAlive(pid: number, startTime?: string): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (rest[0] === "Z" || rest[0] === "X") return false;
    // rest[0] is field 3 (state); start time is field 22.
    return startTime === undefined || rest[19] === startTime;
  } catch {
    return false;
  }
}

/** Start time (field 22 of /proc/PID/stat) of a process, or undefined when it does not exist. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}
