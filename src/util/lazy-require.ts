import { createRequire } from "node:module";

// Resolves like a static import of this file would: the package's own dependencies, from src/ and dist/.
const requireHere = createRequire(import.meta.url);

/**
 * A CommonJS dependency loaded on the first call instead of when runctl is imported: ssh2, ignore
 * and zod are needed only once a machine is reached, a folder synced or input checked, and loading
 * them eagerly made `import("runctl")` and every CLI command pay for them (bench/startup.ts).
 * Synchronous, so sync call sites keep their signatures; later calls return the cached module.
 *
 * @param id - The package name, as a static import would give it.
 * @returns A function that loads the module on its first call and returns it.
 * @example
 * ```ts
 * import type ignoreModule from "ignore";
 * const loadIgnore = lazyRequire<typeof ignoreModule>("ignore");
 * const matcher = loadIgnore()({ ignorecase: false }).add("data/");
 * ```
 */
export function lazyRequire<T>(id: string): () => T {
  let loaded: T | undefined;
  return () => (loaded ??= requireHere(id) as T);
}
