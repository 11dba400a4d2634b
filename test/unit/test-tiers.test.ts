import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import config from "../../vitest.config.js";

/**
 * The tiers of docs/decisions/0009-test-tiers.md: only the e2e project installs Debian packages and starts
 * the SSH testbed, and no unit or integration test reaches for what only e2e provides.
 */
const TEST_DIR = fileURLToPath(new URL("..", import.meta.url));

interface ProjectShape {
  test?: { name?: string; include?: string[]; globalSetup?: string | string[] };
}

function projects(): ProjectShape[] {
  return (config.test?.projects ?? []) as ProjectShape[];
}

function testFiles(folder: string): string[] {
  return readdirSync(join(TEST_DIR, folder), { recursive: true, encoding: "utf8" })
    .filter((name) => name.endsWith(".test.ts"))
    .map((name) => join(folder, name));
}

/** What only the e2e tier has: the testbed, Debian packages (pip/wheel, dpkg checks), dist/. */
const E2E_ONLY = [
  { what: "the testbed", pattern: /\.\.\/testbed\/|runctlTestbed/ },
  { what: "the SSH test hosts", pattern: /support\/ssh-hosts\.js/ },
  { what: "a Slurm test cluster", pattern: /support\/slurm\.js/ },
  { what: "a wheelhouse built with Debian's pip and wheel", pattern: /support\/wheelhouse\.js|"-m", "pip"/ },
  { what: "a Debian package check", pattern: /dpkg-query/ },
  { what: "the built package", pattern: /\bdist\// },
];

describe("test tiers", () => {
  it("only the e2e project has globalSetups (package installs, the testbed)", () => {
    expect(config.test?.globalSetup).toBeUndefined();
    const byName = new Map(projects().map((p) => [p.test?.name, p.test]));
    expect([...byName.keys()].sort()).toEqual(["e2e", "integration", "unit"]);
    expect(byName.get("unit")?.globalSetup).toBeUndefined();
    expect(byName.get("integration")?.globalSetup).toBeUndefined();
    expect(byName.get("e2e")?.globalSetup).toEqual(["./test/support/system-packages.setup.ts", "./test/testbed/global-setup.ts"]);
  });

  it("each project collects its own folder", () => {
    const includes = new Map(projects().map((p) => [p.test?.name, p.test?.include ?? []]));
    expect(includes.get("unit")).toContain("test/unit/**/*.test.ts");
    expect(includes.get("integration")).toEqual(["test/integration/**/*.test.ts"]);
    expect(includes.get("e2e")).toEqual(["test/e2e/**/*.test.ts", "test/testbed/**/*.test.ts"]);
  });

  it("no unit or integration test needs what only e2e provides", () => {
    const misplaced: string[] = [];
    // This file names the patterns itself.
    const files = [...testFiles("unit"), ...testFiles("integration")].filter((f) => f !== join("unit", "test-tiers.test.ts"));
    expect(files.length).toBeGreaterThan(20);
    for (const file of files) {
      const source = readFileSync(join(TEST_DIR, file), "utf8");
      for (const { what, pattern } of E2E_ONLY) if (pattern.test(source)) misplaced.push(`test/${file} uses ${what}`);
    }
    expect(misplaced).toEqual([]);
  });
});
