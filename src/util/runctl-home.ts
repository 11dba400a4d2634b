import { homedir } from "node:os";
import { join, resolve } from "node:path";

/**
 * runctl's local state folder: `RUNCTL_HOME`, else `~/.runctl`. Read at call time, so tests and
 * tools can point it elsewhere.
 *
 * @example
 * ```ts
 * process.env.RUNCTL_HOME = "/tmp/rh"; runctlHome(); // => "/tmp/rh"
 * ```
 */
export function runctlHome(): string {
  const fromEnv = process.env["RUNCTL_HOME"];
  return resolve(fromEnv && fromEnv.length > 0 ? fromEnv : join(homedir(), ".runctl"));
}
