import { hostname, userInfo } from "node:os";

/**
 * Who this process acts for, as runctl tags it (`runctl:owner`): `user@host`.
 *
 * @example
 * ```ts
 * localOwner(); // "ana@laptop"
 * ```
 */
export function localOwner(): string {
  let user = process.env["USER"] ?? "unknown";
  try {
    user = userInfo().username;
  } catch {
    // No passwd entry (some containers): keep $USER.
  }
  return `${user}@${hostname()}`;
}
