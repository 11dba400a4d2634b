/**
 * Where the SSM transport stages objects in an S3 storage, shared by the writer
 * (transport/ssm/ssm-staging.ts) and the leak sweeper (providers/ec2/sweep-staging.ts): change it
 * here and both follow, so the sweeper never misses folders the writer leaves.
 *
 * Layout: `runctl-staging/<scope>/_runctl.json` (the marker, written first, deleted last) and
 * `runctl-staging/<scope>/<objects>`.
 */

/**
 * Top folder of everything the SSM transport stages, inside the staging storage.
 *
 * @example
 * ```ts
 * storage.list(`${STAGING_ROOT}/`);
 * ```
 */
export const STAGING_ROOT = "runctl-staging";

/**
 * Name of the marker object in each staging folder (`runctl-staging/<scope>/_runctl.json`).
 *
 * @example
 * ```ts
 * await storage.stat(`${STAGING_ROOT}/r1/${STAGING_MARKER}`);
 * ```
 */
export const STAGING_MARKER = "_runctl.json";

/**
 * The staging folder of one scope (a run id, or an instance id), with a trailing slash.
 *
 * @example
 * ```ts
 * stagingFolder("r1"); // "runctl-staging/r1/"
 * ```
 */
export function stagingFolder(scope: string): string {
  return `${STAGING_ROOT}/${scope}/`;
}
