import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

// `npm test` builds with tsup before vitest runs, so dist/ is the package a user installs.
describe("the built package", () => {
  it("loads with require() and import(), with the same named exports and types for both", () => {
    const names = ["Runctl", "RunPlan", "TrainingRun", "RunctlError", "CommandError", "local", "localDir", "checkpointStore", "localTransport", "shellQuote"];
    const cjs = execFileSync("node", ["-e", "const r = require('runctl'); console.log(JSON.stringify(Object.keys(r).sort())); r.validateStorageKey('a/b');"], { encoding: "utf8" });
    const esm = execFileSync("node", ["--input-type=module", "-e", "const r = await import('runctl'); console.log(JSON.stringify(Object.keys(r).sort()));"], { encoding: "utf8" });
    expect(JSON.parse(cjs)).toEqual(JSON.parse(esm));
    for (const name of names) expect(JSON.parse(cjs)).toContain(name);
    expect(JSON.parse(cjs)).not.toContain("default");
    expect(existsSync("dist/index.d.ts")).toBe(true);
    expect(existsSync("dist/index.d.cts")).toBe(true);
  });

  it("declares ESM, no side effects, node >= 20.19 and ships only dist", () => {
    const pkg = JSON.parse(readFileSync("package.json", "utf8")) as Record<string, unknown>;
    expect(pkg["type"]).toBe("module");
    expect(pkg["sideEffects"]).toBe(false);
    expect(pkg["files"]).toEqual(["dist"]);
    expect((pkg["engines"] as Record<string, string>)["node"]).toBe(">=20.19");
  });
});
