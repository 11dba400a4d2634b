import { RunctlError } from "../errors/runctl-error.js";

/**
 * A hyperparameter value: anything JSON can carry losslessly.
 *
 * @example
 * ```ts
 * const hp: Record<string, HyperparamValue> = { lr: 1e-3, layers: [64, 64], opt: { name: "adam" } };
 * ```
 */
export type HyperparamValue = string | number | boolean | null | readonly HyperparamValue[] | { readonly [key: string]: HyperparamValue };

/** Hyperparameter names become `--name` arguments, so they are restricted to a safe alphabet. */
const NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/**
 * Checks that hyperparameters survive JSON and argv exactly; throws HYPERPARAM_NOT_SERIALIZABLE
 * naming the offending path (undefined, functions, NaN, Infinity, bigint, Dates, Maps, cycles...).
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
  return hyperparams as Record<string, HyperparamValue>;
}

function check(value: unknown, path: string, seen: Set<object>): void {
  const fail = (why: string): never => {
    throw new RunctlError("HYPERPARAM_NOT_SERIALIZABLE", `${path} ${why}; hyperparameters must be JSON values (string, finite number, boolean, null, arrays, plain objects).`, { details: { path } });
  };
  switch (typeof value) {
    case "string":
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
      else for (const [key, item] of Object.entries(value)) check(item, `${path}.${key}`, seen);
      seen.delete(value);
      return;
    }
    default:
      fail(`is ${typeof value === "undefined" ? "undefined" : `a ${typeof value}`}`);
  }
}

/**
 * Turns hyperparameters into `--name value` arguments: strings verbatim, numbers and booleans as
 * JSON text (`0.001`, `true`), `null` as `null`, lists and objects as JSON.
 *
 * @example
 * ```ts
 * hyperparamArgs({ lr: 0.001, tags: ["a b"] }); // ["--lr", "0.001", "--tags", "[\"a b\"]"]
 * ```
 */
export function hyperparamArgs(hyperparams: Readonly<Record<string, HyperparamValue>>): string[] {
  return Object.entries(hyperparams).flatMap(([name, value]) => [`--${name}`, typeof value === "string" ? value : JSON.stringify(value)]);
}
