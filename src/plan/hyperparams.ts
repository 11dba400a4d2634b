import { RunctlError } from "../errors/runctl-error.js";
import type { HyperparamValue } from "../engine/run-spec.js";
import { MAX_ARG_BYTES, execStringProblem } from "./os-limits.js";

export type { HyperparamValue } from "../engine/run-spec.js";

/** Hyperparameter names become `--name` arguments, so they are restricted to a safe alphabet. */
const NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/**
 * Checks that hyperparameters survive JSON and argv exactly; throws HYPERPARAM_NOT_SERIALIZABLE
 * naming the offending path (undefined, functions, NaN, Infinity, bigint, Dates, Maps, cycles...,
 * strings or keys with a NUL character or a lone surrogate, an argument or `RUNCTL_HPARAMS` over
 * the operating system's {@link MAX_ARG_BYTES} limit).
 *
 * @example
 * ```ts
 * validateHyperparams({ lr: NaN }); // throws: hyperparams.lr is NaN
 * ```
 */
export function validateHyperparams(hyperparams: unknown): Record<string, HyperparamValue> {
  if (typeof hyperparams !== "object" || hyperparams === null || Array.isArray(hyperparams)) {
    throw new RunctlError("HYPERPARAM_NOT_SERIALIZABLE", "hyperparams must be a plain object of name -> value.");
  }
  for (const name of Object.keys(hyperparams)) {
    if (!NAME.test(name)) {
      throw new RunctlError("HYPERPARAM_NOT_SERIALIZABLE", `Hyperparameter name ${JSON.stringify(name)} is not allowed: use letters, digits, '_', '.', '-' (it becomes --${name}).`);
    }
  }
  check(hyperparams, "hyperparams", new Set());
  const valid = hyperparams as Record<string, HyperparamValue>;
  for (const arg of hyperparamArgs(valid)) {
    const problem = execStringProblem(arg);
    if (problem !== undefined) {
      const name = arg.slice(2, arg.indexOf("="));
      throw new RunctlError("HYPERPARAM_NOT_SERIALIZABLE", `hyperparams.${name}: its argument --${name}=... ${problem}.`, { details: { path: `hyperparams.${name}` } });
    }
  }
  // The agent hands the trainer RUNCTL_HPARAMS as Python's json.dumps writes it: non-ASCII escaped.
  const envBytes = "RUNCTL_HPARAMS=".length + JSON.stringify(valid).replace(/[^\x00-\x7f]/g, "\\u0000").length;
  if (envBytes > MAX_ARG_BYTES) {
    throw new RunctlError(
      "HYPERPARAM_NOT_SERIALIZABLE",
      `hyperparams come to ${envBytes} bytes as RUNCTL_HPARAMS, over the operating system's limit of ${MAX_ARG_BYTES} bytes for one environment variable; pass large values through a file instead.`,
      { details: { path: "hyperparams", bytes: envBytes } },
    );
  }
  return valid;
}

function check(value: unknown, path: string, seen: Set<object>): void {
  const fail = (why: string): never => {
    throw new RunctlError("HYPERPARAM_NOT_SERIALIZABLE", `${path} ${why}; hyperparameters must be JSON values (string, finite number, boolean, null, arrays, plain objects).`, { details: { path } });
  };
  switch (typeof value) {
    case "string": {
      // NUL ends a C string and a lone surrogate has no UTF-8 form: either would arrive changed.
      const problem = execStringProblem(value);
      if (problem !== undefined && !problem.startsWith("is ")) fail(problem);
      return;
    }
    case "boolean":
      return;
    case "number":
      if (!Number.isFinite(value)) fail(`is ${value}`);
      return;
    case "object": {
      if (value === null) return;
      if (seen.has(value)) fail("is a circular reference");
      const proto = Object.getPrototypeOf(value) as unknown;
      if (!Array.isArray(value) && proto !== Object.prototype && proto !== null) fail(`is a ${value.constructor?.name ?? "non-plain object"}`);
      seen.add(value);
      if (Array.isArray(value)) value.forEach((item, i) => check(item, `${path}[${i}]`, seen));
      else
        for (const [key, item] of Object.entries(value)) {
          check(key, `${path} key ${JSON.stringify(key)}`, seen);
          check(item, `${path}.${key}`, seen);
        }
      seen.delete(value);
      return;
    }
    default:
      fail(`is ${typeof value === "undefined" ? "undefined" : `a ${typeof value}`}`);
  }
}

/**
 * Turns hyperparameters into one `--name=value` argument each: strings verbatim, numbers and
 * booleans as JSON text (`0.001`, `true`), `null` as `null`, lists and objects as JSON. One
 * element, never `--name value`: a value that starts with `-` (`"--lr=100"`) would otherwise be
 * read by argparse as an option of its own.
 *
 * @example
 * ```ts
 * hyperparamArgs({ lr: 0.001, tags: ["a b"] }); // ["--lr=0.001", "--tags=[\"a b\"]"]
 * ```
 */
export function hyperparamArgs(hyperparams: Readonly<Record<string, HyperparamValue>>): string[] {
  return Object.entries(hyperparams).map(([name, value]) => `--${name}=${typeof value === "string" ? value : JSON.stringify(value)}`);
}
