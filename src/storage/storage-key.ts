import { RunctlError } from "../errors/runctl-error.js";

/**
 * Validates a storage key: relative POSIX path, no `..` or `.` parts, no empty parts, no NUL,
 * no backslashes. A trailing `/` is allowed only when `allowPrefix` is set (for list prefixes).
 *
 * @example
 * ```ts
 * validateStorageKey("run-1/checkpoints/step-1/manifest.json"); // ok
 * validateStorageKey("../etc/passwd"); // throws INVALID_STORAGE_KEY
 * ```
 */
export function validateStorageKey(key: string, options: { readonly allowPrefix?: boolean | undefined } = {}): string {
  const bad = (why: string): never => {
    throw new RunctlError("INVALID_STORAGE_KEY", `Invalid storage key ${JSON.stringify(key)}: ${why}.`);
  };
  if (options.allowPrefix && key === "") return key;
  if (key === "") bad("it is empty");
  if (key.includes("\0")) bad("it contains a NUL byte");
  if (key.includes("\\")) bad("it contains a backslash");
  if (key.startsWith("/")) bad("it is absolute");
  const parts = key.split("/");
  if (options.allowPrefix && parts[parts.length - 1] === "") parts.pop();
  for (const part of parts) {
    if (part === "") bad("it has an empty path part");
    if (part === "." || part === "..") bad(`it has a '${part}' part`);
  }
  return key;
}
