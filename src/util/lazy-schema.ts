import type * as zodModule from "zod";
import { lazyRequire } from "./lazy-require.js";

// zod builds its classes when loaded (about 50 ms), so it loads with the first schema used, not with `runctl`.
const loadZod = lazyRequire<typeof zodModule>("zod");

/**
 * A zod schema built on first use, with zod itself loaded then: `import("runctl")` stays light
 * (bench/startup.ts), and the first builder call or reply parsed pays instead. Call it for the
 * schema; later calls return the same one.
 *
 * @param build - Builds the schema from zod's `z`.
 * @returns A function that returns the schema.
 * @example
 * ```ts
 * const pointSchema = lazySchema((z) => z.object({ x: z.number(), y: z.number() }));
 * pointSchema().parse({ x: 1, y: 2 });
 * ```
 */
export function lazySchema<S>(build: (z: typeof zodModule.z) => S): () => S {
  let schema: S | undefined;
  return () => (schema ??= build(loadZod().z));
}
