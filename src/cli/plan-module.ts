import { existsSync, statSync } from "node:fs";
import { basename, extname } from "node:path";
import { pathToFileURL } from "node:url";
import type { PlanSummary } from "../index.js";
import { CliError, EXIT_CODES, UsageError } from "./cli-errors.js";

/**
 * What a plan module must export for `runctl plan FILE` and `runctl doctor FILE`.
 *
 * @example
 * ```ts
 * // plan.mjs
 * export const plan = Runctl.instance(local()).sync("./training");
 * export const script = "train.py";
 * ```
 */
export interface PlanModule {
  /** A RunPlan (only its `plan(script)` is used, so a plan built with another copy of runctl works). */
  readonly plan: { plan(script?: string): Promise<PlanSummary> };
  /** The training script, relative to the synced folder. */
  readonly script: string;
}

const JS = [".js", ".mjs", ".cjs"];
const TS = [".ts", ".mts", ".cts"];

/**
 * Loads the plan module at `path` (absolute, or relative to the working directory) for `command`
 * (the CLI command whose FILE it is, which usage errors start with). JavaScript is
 * imported as is; TypeScript through Node's own type stripping (Node >= 22.18, or older 22.x with
 * `--experimental-strip-types`), else through tsx when the project has it. Every way this can fail
 * is a typed {@link CliError} naming the file and what to do, never a raw Node error: a missing
 * file, a file that is not a module, TypeScript that cannot be loaded here, a module without the
 * `plan` and `script` exports (exit 2); a module that fails to load or throws (`PLAN_LOAD_FAILED`,
 * or the module's own RunctlError; exit 1).
 *
 * @example
 * ```ts
 * const { plan, script } = await loadPlanModule("/work/project/plan.ts");
 * console.log((await plan.plan(script)).steps);
 * ```
 */
export async function loadPlanModule(path: string, command: "plan" | "doctor" = "plan"): Promise<PlanModule> {
  if (!existsSync(path)) throw new UsageError(`${command}: no file ${path}`);
  if (statSync(path).isDirectory()) throw new UsageError(`${command}: ${path} is a folder; give the plan module file (e.g. plan.ts)`);
  const ext = extname(path).toLowerCase();
  const typescript = TS.includes(ext);
  if (!typescript && !JS.includes(ext)) {
    throw new UsageError(`${command}: ${basename(path)} is not a plan module; FILE must be JavaScript or TypeScript (${[...JS, ...TS].join(", ")}) exporting plan and script`);
  }
  const url = pathToFileURL(path).href;
  let loaded: Record<string, unknown>;
  if (typescript && !process.features.typescript) {
    // Older Node 22 without type stripping: tsx when the project has it, else say what to do.
    await registerTsx(path, "no-stripping");
    loaded = await importPlan(url, path);
  } else {
    try {
      loaded = (await import(url)) as Record<string, unknown>;
    } catch (err) {
      if (typescript && nodeCode(err) === "ERR_UNSUPPORTED_TYPESCRIPT_SYNTAX") {
        // Syntax that type stripping cannot erase (enum, namespace, parameter properties): tsx can.
        await registerTsx(path, "syntax", (err as Error).message);
        // A new URL: the failed load may be cached under the plain one.
        loaded = await importPlan(`${url}?runctl-plan=${Date.now()}`, path);
      } else if (typescript && nodeCode(err) === "ERR_UNKNOWN_FILE_EXTENSION") {
        // A runtime that reports type stripping but refuses .ts (it is off for this process).
        await registerTsx(path, "no-stripping");
        loaded = await importPlan(`${url}?runctl-plan=${Date.now()}`, path);
      } else {
        throw loadFailure(err, path);
      }
    }
  }
  const plan = loaded["plan"] as { plan?: unknown } | undefined;
  const script = loaded["script"];
  if (typeof plan !== "object" || plan === null || typeof plan.plan !== "function" || typeof script !== "string") {
    const names = Object.keys(loaded).join(", ") || "nothing";
    throw new CliError(
      "INVALID_ARGUMENT",
      `${path} must export plan (a RunPlan, e.g. Runctl.instance(local()).sync("./")) and script (the training script, a string); it exports ${names}.`,
      EXIT_CODES.usage,
    );
  }
  return { plan: plan as PlanModule["plan"], script };
}

async function importPlan(url: string, path: string): Promise<Record<string, unknown>> {
  try {
    return (await import(url)) as Record<string, unknown>;
  } catch (err) {
    throw loadFailure(err, path);
  }
}

/** The module's own RunctlError (e.g. SCRIPT_NOT_FOUND) as it is; anything else named for the file. */
function loadFailure(err: unknown, path: string): unknown {
  if (typeof err === "object" && err !== null && typeof (err as { retryable?: unknown }).retryable === "boolean") return err;
  const code = nodeCode(err);
  const message = err instanceof Error ? err.message : String(err);
  if (code === "ERR_UNSUPPORTED_TYPESCRIPT_SYNTAX") {
    return new CliError("INVALID_ARGUMENT", `${path} uses TypeScript that type stripping cannot load (${message}); replace it (an enum by a const object, a parameter property by a field) or install tsx (npm i -D tsx)`, EXIT_CODES.usage);
  }
  const hint = code === "ERR_MODULE_NOT_FOUND" ? "; install the package it imports, or fix the import path (with type stripping, import TypeScript files by their .ts name)" : "";
  return new CliError("PLAN_LOAD_FAILED", `could not load the plan module ${path}: ${message}${hint}`, EXIT_CODES.failed, { cause: err });
}

function nodeCode(err: unknown): string | undefined {
  const code = typeof err === "object" && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === "string" ? code : undefined;
}

/** Registers tsx's ESM loader (a devDependency of projects that write plans in TypeScript). */
async function registerTsx(path: string, why: "no-stripping" | "syntax", detail?: string): Promise<void> {
  // A variable specifier: tsx is optional and must never be bundled into the bin.
  const specifier = "tsx/esm/api";
  let api: { register?: (() => unknown) | undefined };
  try {
    api = (await import(specifier)) as { register?: () => unknown };
  } catch {
    if (why === "syntax") {
      throw new CliError(
        "INVALID_ARGUMENT",
        `${path} uses TypeScript that Node's type stripping cannot load (${detail ?? "TS-only syntax"}); replace it (an enum by a const object, a parameter property by a field, no namespace), or install tsx (npm i -D tsx) and runctl uses it`,
        EXIT_CODES.usage,
      );
    }
    throw new CliError(
      "UNSUPPORTED",
      `${path} is TypeScript and this Node (${process.version}) does not strip types (on by default from Node 22.18 unless turned off); run with NODE_OPTIONS=--experimental-strip-types, or install tsx (npm i -D tsx), or compile the plan to .js`,
      EXIT_CODES.usage,
    );
  }
  if (typeof api.register !== "function") throw new CliError("UNSUPPORTED", `The installed tsx has no ESM register(); compile ${path} to .js instead.`, EXIT_CODES.usage);
  api.register();
}
