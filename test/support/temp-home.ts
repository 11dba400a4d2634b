import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Folders made by this test file's helpers; removed after its last test (temp-cleanup.setup.ts). */
const made: string[] = [];

/** Points RUNCTL_HOME at a fresh folder for this test file (vitest runs each file in its own process). */
export function useTempRunctlHome(label: string): string {
  const home = tempDir(label);
  process.env["RUNCTL_HOME"] = home;
  return home;
}

/** A fresh folder under the system's temporary folder, removed after this test file's last test. */
export function tempDir(label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `runctl-${label}-`));
  made.push(dir);
  return dir;
}

/**
 * Removes every folder the helpers above made in this test file. A folder that cannot be removed
 * (a process of the test still writing into it) is left: a test's leftovers never fail the suite.
 */
export function removeTempDirs(): void {
  for (const dir of made.splice(0)) {
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 2 });
    } catch {
      // Left for the system's own cleanup of its temporary folder.
    }
  }
}
