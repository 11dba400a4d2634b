/**
 * A byte count for people, in binary units (`"14.3 KiB"`); `"-"` for a negative or non-finite
 * count. The one formatter of the CLI and the sync size guard.
 *
 * @example
 * ```ts
 * formatBytes(14_596); // "14.3 KiB"
 * ```
 */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}
