import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const REPO = fileURLToPath(new URL("../..", import.meta.url));
const VITEST = join(REPO, "node_modules", "vitest", "vitest.mjs");
const REPORTER = join(REPO, "test", "support", "summary-reporter.ts");

describe("the test summary reporter (what .ci/run prints again at its end)", () => {
  const dir = mkdtempSync(join(tmpdir(), "runctl-summary-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("names each failed test, a file that failed in a hook, and an unhandled error, and counts a test its failed hook skipped; the summary file gets the same", () => {
    writeFileSync(
      join(dir, "a.test.js"),
      [
        'it("passes", () => {});',
        'it("fails", () => { expect(1).toBe(2); });',
        'it("throws later", async () => { setTimeout(() => { throw new Error("late boom"); }, 0); await new Promise((r) => setTimeout(r, 50)); });',
      ].join("\n"),
    );
    writeFileSync(join(dir, "b.test.js"), ['describe("setup", () => {', '  beforeAll(() => { throw new Error("no testbed"); });', '  it("never runs", () => {});', "});"].join("\n"));
    writeFileSync(join(dir, "vitest.config.mjs"), `export default { test: { globals: true, include: ["*.test.js"], reporters: [${JSON.stringify(REPORTER)}] } };`);
    const summary = join(dir, "summary.txt");
    const r = spawnSync(process.execPath, [VITEST, "run", "--root", dir, "--config", join(dir, "vitest.config.mjs")], {
      cwd: dir,
      encoding: "utf8",
      env: { ...process.env, RUNCTL_TEST_SUMMARY_FILE: summary, CI: "true" },
      timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(1);
    const lines = readFileSync(summary, "utf8").trim().split("\n");
    // "never runs" is counted as skipped: its suite's beforeAll failed, which the b.test.js line reports.
    expect(lines[0]).toBe("Tests: 2 passed, 1 failed, 1 skipped, 1 unhandled errors");
    expect(lines).toContain("FAILED a.test.js > fails: AssertionError: expected 1 to be 2 // Object.is equality");
    expect(lines.some((l) => l.startsWith("FAILED b.test.js") && l.includes("no testbed"))).toBe(true);
    expect(lines).toContain("UNHANDLED ERROR: Error: late boom");
    expect(r.stdout).toContain(lines[0]);
  });
});
