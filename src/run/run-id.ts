import { randomBytes } from "node:crypto";

/**
 * A new run id: sortable by start time, unique enough to never collide (`20261121-151300-k3f9a2`).
 *
 * @example
 * ```ts
 * newRunId(); // "20261121-151300-k3f9a2"
 * ```
 */
export function newRunId(now: Date = new Date()): string {
  const iso = now.toISOString();
  const stamp = `${iso.slice(0, 10).replace(/-/g, "")}-${iso.slice(11, 19).replace(/:/g, "")}`;
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  const suffix = [...randomBytes(6)].map((b) => alphabet[b % alphabet.length]).join("");
  return `${stamp}-${suffix}`;
}
