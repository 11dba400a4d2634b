/**
 * Builds dist/ with tsup before a bench that times the built package (what a user installs), unless
 * `BENCH_BUILD=0` asks to time the dist/ already there.
 */
import { spawnSync } from "node:child_process";

/** Runs `npx tsup` in `repo` and prints how long it took; throws with tsup's output if it fails. */
export function buildDist(repo: string): void {
  if (process.env["BENCH_BUILD"] === "0") return;
  const started = performance.now();
  const result = spawnSync("npx", ["tsup"], { cwd: repo, encoding: "utf8" });
  if (result.status !== 0) throw new Error(`tsup failed:\n${result.stdout}${result.stderr}`);
  console.log(`built dist/ with tsup in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}
