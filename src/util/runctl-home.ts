import { createHash } from "node:crypto";
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

/**
 * The hash cache of a synced local folder, shared by every sync of that folder (runs and manual
 * syncs), so an unchanged tree is not re-read.
 *
 * @example
 * ```ts
 * syncHashCachePath("/home/me/project"); // "~/.runctl/cache/hashes-3f2a….json"
 * ```
 */
export function syncHashCachePath(localDir: string): string {
  return join(runctlHome(), "cache", `hashes-${createHash("sha256").update(localDir).digest("hex").slice(0, 16)}.json`);
}

/**
 * The folder of a run's local journal (`run.json`, `journal.jsonl`). Here, not in run/, because the
 * EC2 sweep (a lower layer) reads journals too.
 *
 * @example
 * ```ts
 * journalDir("20261121-152117-utfo5u"); // "~/.runctl/runs/20261121-152117-utfo5u"
 * ```
 */
export function journalDir(runId: string): string {
  return join(runctlHome(), "runs", runId);
}
