import { statSync } from "node:fs";
import { isAbsolute, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { z } from "zod";
import { RunctlError } from "../errors/runctl-error.js";
import { lazySchema } from "../util/lazy-schema.js";
import { checkExecString } from "./os-limits.js";

/** Parses `value` with a zod schema (a {@link lazySchema}), turning failures into INVALID_ARGUMENT naming the call. */
export function parseOptions<T>(schema: () => z.ZodType<T>, value: unknown, call: string): T {
  const result = schema().safeParse(value ?? {});
  if (!result.success) {
    const issues = result.error.issues.map((i) => `${i.path.join(".") || "(options)"}: ${i.message}`).join("; ");
    throw new RunctlError("INVALID_ARGUMENT", `${call}: ${issues}`);
  }
  return result.data;
}

const positiveMs = lazySchema((z) => z.number().int().positive().finite());

export const syncOptionsSchema = lazySchema((z) => z.strictObject({
  ignore: z.array(z.string()).optional(),
  maxBytes: z.number().int().positive().optional(),
  maxFiles: z.number().int().positive().optional(),
}));

export const setupOptionsSchema = lazySchema((z) => z.strictObject({
  requirements: z.string().min(1).optional(),
  commands: z.array(z.string().min(1)).optional(),
  pip: z
    .strictObject({
      findLinks: z.array(z.string().min(1)).optional(),
      noIndex: z.boolean().optional(),
      indexUrl: z.string().min(1).optional(),
      extraArgs: z.array(z.string()).optional(),
    })
    .optional(),
  systemSitePackages: z.boolean().optional(),
}));

export const checkpointOptionsSchema = lazySchema((z) => z.strictObject({
  storage: z.custom<object>((v) => typeof v === "object" && v !== null && typeof (v as { put?: unknown }).put === "function", "must be a Storage (localDir(...), s3(...))").optional(),
  keep: z.number().int().min(1).optional(),
  dir: z.string().min(1).optional(),
  settleMs: z.number().int().min(0).optional(),
}));

export const recoverOptionsSchema = lazySchema((z) => z.strictObject({
  maxRestarts: z.number().int().min(0).optional(),
  onEvents: z.array(z.enum(["interruption", "host-lost"])).optional(),
  backoffMs: z.number().int().min(0).optional(),
  hostLostAfterMs: z.number().int().positive().optional(),
  retryOnExitCodes: z.array(z.number().int().min(1).max(255)).optional(),
}));

export const budgetOptionsSchema = lazySchema((z) => z.strictObject({ maxDurationMs: positiveMs().optional(), maxUsd: z.number().positive().finite().optional() }));

export const trainOptionsSchema = lazySchema((z) => z.strictObject({
  hyperparams: z.record(z.string(), z.unknown()).optional(),
  args: z.array(z.string()).optional(),
  python: z.string().min(1).optional(),
  signal: z.instanceof(AbortSignal).optional(),
  cancelStrategy: z.enum(["detach", "interrupt", "kill"]).optional(),
  metricPattern: z.instanceof(RegExp).optional(),
  graceMs: z.number().int().min(0).optional(),
  costIntervalMs: z.number().int().min(100).optional(),
  cleanup: z.boolean().optional(),
  runId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/, "letters, digits, '-' and '_' only").optional(),
}));

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Environment variables: valid names, string values that reach the machine exactly (no NUL, no lone
 * surrogate, within the operating system's limit), and none of runctl's own `RUNCTL_*` names.
 */
export function validateEnv(vars: unknown): Record<string, string> {
  if (typeof vars !== "object" || vars === null || Array.isArray(vars)) {
    throw new RunctlError("INVALID_ARGUMENT", ".env(vars): vars must be an object of name -> string.");
  }
  for (const [name, value] of Object.entries(vars)) {
    if (!ENV_NAME.test(name)) throw new RunctlError("INVALID_ARGUMENT", `.env(): ${JSON.stringify(name)} is not a valid variable name.`);
    if (name.startsWith("RUNCTL_")) throw new RunctlError("INVALID_ARGUMENT", `.env(): ${name} is reserved; runctl sets RUNCTL_* variables itself.`);
    if (typeof value !== "string") throw new RunctlError("INVALID_ARGUMENT", `.env(): ${name} must be a string, got ${typeof value}.`);
    checkExecString(`.env(): ${name}`, `${name}=${value}`, "INVALID_ARGUMENT");
  }
  return { ...(vars as Record<string, string>) };
}

/** A relative path that stays inside its base folder (`train.py`, `src/train.py`). */
export function validateRelativePath(path: string, what: string): string {
  if (typeof path !== "string") throw new RunctlError("INVALID_ARGUMENT", `${what} must be a relative path inside the synced folder, got ${typeof path}.`);
  const normal = normalize(path);
  if (path === "" || isAbsolute(path) || normal === ".." || normal.startsWith("../") || normal.includes("\0")) {
    throw new RunctlError("INVALID_ARGUMENT", `${what} must be a relative path inside the synced folder, got ${JSON.stringify(path)}.`);
  }
  return normal;
}

/** Resolves a local folder (path or file:// URI); SYNC_DIR_NOT_FOUND when it is not a folder. */
export function existingDir(path: string): string {
  const dir = resolve(path.startsWith("file://") ? fileURLToPath(path) : path);
  const info = statSync(dir, { throwIfNoEntry: false });
  if (!info?.isDirectory()) {
    throw new RunctlError("SYNC_DIR_NOT_FOUND", `.sync(${JSON.stringify(path)}): ${dir} is not a folder.`);
  }
  return dir;
}

/**
 * Parses a data path: a folder or file on the machine (`/abs/path`, `file:///abs/path`, or a relative
 * path for machines that share this filesystem). `s3://` URIs are handled by `.data()` itself.
 */
export function parseDataUri(uri: string, sharesLocalFilesystem: boolean): string {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(uri) && !uri.startsWith("file://")) {
    throw new RunctlError("INVALID_URI", `.data(${JSON.stringify(uri)}): unknown scheme; use a path or file:///abs/path.`);
  }
  const path = uri.startsWith("file://") ? fileURLToPath(uri) : uri;
  if (!isAbsolute(path)) {
    if (!sharesLocalFilesystem) throw new RunctlError("INVALID_URI", `.data(${JSON.stringify(uri)}): a relative path is ambiguous on a remote machine; give an absolute path.`);
    return resolve(path);
  }
  return path;
}
