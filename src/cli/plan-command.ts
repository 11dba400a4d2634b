import { resolve } from "node:path";
import { output, type CliIo } from "./cli-output.js";
import { formatBytes } from "../util/format-bytes.js";
import { formatDuration } from "../util/format-duration.js";
import { formatUsd } from "../util/format-usd.js";
import { CliError, EXIT_CODES, type ExitCode } from "./cli-errors.js";
import { loadPlanModule } from "./plan-module.js";

export type { PlanModule } from "./plan-module.js";

/**
 * `runctl plan FILE`: imports the module, calls `plan.plan(script)` (the SDK's dry run: no side
 * effects) and prints the summary.
 *
 * @example
 * ```ts
 * const code = await planCommand({ file: "examples/quickstart.ts", json: true }, io);
 * ```
 */
export async function planCommand(options: { readonly file: string; readonly json: boolean }, io: CliIo): Promise<ExitCode> {
  const o = output(io);
  const path = resolve(io.cwd ?? process.cwd(), options.file);
  const loaded = await untilAborted(loadPlanModule(path), io.signal);
  const summary = await untilAborted(loaded.plan.plan(loaded.script), io.signal);
  if (options.json) {
    o.json({ schemaVersion: 1, file: path, script: loaded.script, plan: summary });
    return EXIT_CODES.ok;
  }
  o.out(`plan: ${loaded.script} on ${summary.provider}`);
  o.out("steps:");
  summary.steps.forEach((step, i) => o.out(`  ${i + 1}. ${step}`));
  o.out(summary.resources.length === 0 ? "resources: none created" : "resources:");
  for (const r of summary.resources) {
    const tags = Object.entries(r.tags).map(([k, v]) => `${k}=${v}`).join(", ");
    o.out(`  ${r.kind}: ${r.description}${tags ? ` [tags: ${tags}]` : ""}`);
  }
  const sync = summary.sync;
  if (sync) {
    o.out(`sync: ${sync.files} files, ${formatBytes(sync.bytes)} from ${sync.root}`);
    const largest = sync.largest.files.slice(0, 3).map((f) => `${f.path} (${formatBytes(f.bytes)})`).join(", ");
    if (largest) o.out(`  largest: ${largest}`);
    for (const warning of sync.warnings) o.out(`  warning: ${warning}`);
    if (sync.tooLarge) o.out(`  TOO LARGE: ${sync.tooLarge}`);
  } else {
    o.out("sync: nothing (no .sync())");
  }
  o.out(`checkpoints: ${summary.checkpoints.storage ?? "none (not kept)"}${summary.checkpoints.keep !== null ? `, keep ${summary.checkpoints.keep}` : ""}`);
  const { hourlyUsd, maxDurationMs, maxTotalUsd } = summary.estimate;
  // Read loosely: newer SDKs add where the price comes from and the money budget.
  const extra = summary.estimate as { readonly basis?: unknown; readonly budgetUsd?: unknown; readonly withinBudget?: unknown };
  const refusal = (summary as { readonly refusal?: { readonly code: string; readonly message: string } | null }).refusal;
  o.out(
    `estimate: ${hourlyUsd === null ? "unknown" : formatUsd(hourlyUsd)}/h; ${hourlyUsd === null ? "expected total unknown (no price known)" : maxDurationMs === null || maxTotalUsd === null ? "expected total unknown (no .budget({ maxDurationMs }))" : `at most ${formatUsd(maxTotalUsd)} over ${formatDuration(maxDurationMs)}`}`,
  );
  if (typeof extra.basis === "string") o.out(`  price basis: ${extra.basis}`);
  if (typeof extra.budgetUsd === "number") {
    o.out(`budget: ${formatUsd(extra.budgetUsd)}${extra.withinBudget === false ? ` — .train() would refuse the run (${refusal?.code ?? "BUDGET_EXCEEDED"})` : ""}`);
  }
  if (refusal) o.out(`refused: ${refusal.code}: ${refusal.message}`);
  return EXIT_CODES.ok;
}

/** Rejects with ABORTED (exit 130) when the signal fires first; a dry run has nothing to undo. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  return new Promise<T>((resolvePromise, reject) => {
    const onAbort = (): void => reject(new CliError("ABORTED", "Interrupted.", EXIT_CODES.interrupted));
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolvePromise(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}
