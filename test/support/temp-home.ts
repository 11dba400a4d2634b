import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Points RUNCTL_HOME at a fresh folder for this test file (vitest runs each file in its own process). */
export function useTempRunctlHome(label: string): string {
  const home = mkdtempSync(join(tmpdir(), `runctl-${label}-`));
  process.env["RUNCTL_HOME"] = home;
  return home;
}

/** A fresh temporary folder. */
export function tempDir(label: string): string {
  return mkdtempSync(join(tmpdir(), `runctl-${label}-`));
}
