import { existsSync } from "node:fs";
import { extname } from "node:path";
import { pathToFileURL } from "node:url";
import { CliError, UsageError } from "./cli-errors.js";
import type { PlanModule } from "./plan-command.js";

/**
 * The plan module at `path`; TypeScript through tsx's ESM loader when the runtime cannot load it itself.
 *
 * @example
 * ```ts
 * const { plan, script } = await loadPlanModule("/abs/examples/quickstart.mjs");
 * ```
 */
export async function loadPlanModule(path: string): Promise<PlanModule> {
  if (!existsSync(path)) throw new UsageError(`plan: no file ${path}`);
  const url = pathToFileURL(path).href;
  let loaded: Record<string, unknown>;
  try {
    loaded = (await import(url)) as Record<string, unknown>;
  } catch (err) {
    if (!/^\.[mc]?tsx?$/.test(extname(path)) || (err as NodeJS.ErrnoException).code !== "ERR_UNKNOWN_FILE_EXTENSION") throw err;
    await registerTsx(path);
    // A new URL: the failed load above may be cached under the plain one.
    loaded = (await import(`${url}?runctl-plan=${Date.now()}`)) as Record<string, unknown>;
  }
  const plan = loaded["plan"] as { plan?: unknown } | undefined;
  const script = loaded["script"];
  if (typeof plan !== "object" || plan === null || typeof plan.plan !== "function" || typeof script !== "string") {
    const names = Object.keys(loaded).join(", ") || "nothing";
    throw new CliError("INVALID_ARGUMENT", `${path} must export plan (a RunPlan, e.g. Runctl.instance(local()).sync("./")) and script (the training script, a string); it exports ${names}.`);
  }
  return { plan: plan as PlanModule["plan"], script };
}

/** Registers tsx's ESM loader (a devDependency of projects that write plans in TypeScript). */
async function registerTsx(path: string): Promise<void> {
  // A variable specifier: tsx is optional and must never be bundled into the bin.
  const specifier = "tsx/esm/api";
  let api: { register?: (() => unknown) | undefined };
  try {
    api = (await import(specifier)) as { register?: () => unknown };
  } catch {
    throw new CliError("UNSUPPORTED", `${path} is TypeScript and tsx is not installed; compile it to .js, or run runctl under tsx (npx tsx node_modules/runctl/dist/cli.js plan ${path}).`);
  }
  if (typeof api.register !== "function") throw new CliError("UNSUPPORTED", `The installed tsx has no ESM register(); compile ${path} to .js instead.`);
  api.register();
}
