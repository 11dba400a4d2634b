import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

  it("has a runctl/aws entry that loads with require() and import(), sharing the root's RunctlError", () => {
    const names = ["ec2", "s3", "s3FromDescriptor", "parseS3Uri", "ssmTransport", "ebsVolumes", "sweepEc2", "mountVolume", "prewarmVolume", "RUNCTL_TAGS"];
    const script = (load: string): string =>
      `${load}; let same = false; try { aws.s3("not-a-uri"); } catch (e) { same = e instanceof root.RunctlError && e.code === "INVALID_URI"; } console.log(JSON.stringify({ keys: Object.keys(aws).sort(), same }));`;
    const cjs = JSON.parse(execFileSync("node", ["-e", script("const root = require('runctl'); const aws = require('runctl/aws')")], { encoding: "utf8" })) as { keys: string[]; same: boolean };
    const esm = JSON.parse(
      execFileSync("node", ["--input-type=module", "-e", script("const root = await import('runctl'); const aws = await import('runctl/aws')")], { encoding: "utf8" }),
    ) as { keys: string[]; same: boolean };
    expect(cjs.keys).toEqual(esm.keys);
    for (const name of names) expect(cjs.keys).toContain(name);
    expect(cjs.same).toBe(true);
    expect(esm.same).toBe(true);
    expect(existsSync("dist/aws.d.ts")).toBe(true);
    expect(existsSync("dist/aws.d.cts")).toBe(true);
  });

  it("the root entry does not load the AWS SDK (require and import); runctl/aws does", () => {
    const cjs = (entry: string): number =>
      Number(execFileSync("node", ["-e", `require(${JSON.stringify(entry)}); console.log(Object.keys(require.cache).filter((k) => k.includes("@aws-sdk")).length)`], { encoding: "utf8" }));
    expect(cjs("runctl")).toBe(0);
    expect(cjs("runctl/aws")).toBeGreaterThan(0);
    // ESM: a resolve hook that refuses every @aws-sdk module; importing must still succeed.
    const hook = `data:text/javascript,${encodeURIComponent("export async function resolve(s, c, next) { const r = await next(s, c); if (r.url.includes('@aws-sdk')) throw new Error('AWS SDK loaded: ' + r.url); return r; }")}`;
    const esm = (entry: string): string =>
      execFileSync(
        "node",
        ["--input-type=module", "-e", `import { register } from "node:module"; register(${JSON.stringify(hook)}); try { await import(${JSON.stringify(entry)}); console.log("clean"); } catch (e) { console.log(String(e.message).includes("AWS SDK loaded") ? "sdk" : "error: " + e.message); }`],
        { encoding: "utf8" },
      ).trim();
    expect(esm("runctl")).toBe("clean");
    expect(esm("runctl/aws")).toBe("sdk");
    const root = JSON.parse(readFileSync("package.json", "utf8")) as { exports: Record<string, unknown> };
    expect(Object.keys(root.exports)).toContain("./aws");
  });

  it("the root entry loads ssh2, tar-stream, ignore and zod only when used (require and import); runctl/aws loads ssh2", () => {
    // CommonJS packages land in require.cache whether required or imported; list them by package.
    const report = `console.log(JSON.stringify([...new Set(Object.keys(require.cache).flatMap((k) => /node_modules\\/((?:@[^/]+\\/)?[^/]+)/.exec(k)?.[1] ?? []))]))`;
    const loaded = (args: string[]): string[] => JSON.parse(execFileSync("node", args, { encoding: "utf8" })) as string[];
    const cjs = loaded(["-e", `require("runctl"); ${report}`]);
    const esm = loaded(["--input-type=module", "-e", `import { createRequire } from "node:module"; const require = createRequire(import.meta.url); await import("runctl"); ${report}`]);
    const aws = loaded(["--input-type=module", "-e", `import { createRequire } from "node:module"; const require = createRequire(import.meta.url); await import("runctl/aws"); ${report}`]);
    for (const name of ["ssh2", "tar-stream", "ignore", "zod"]) {
      expect(cjs).not.toContain(name);
      expect(esm).not.toContain(name);
    }
    expect(aws).toContain("ssh2");
  });

  it("the bin loads no dependency for --version and ls (a sweep does)", () => {
    const home = mkdtempSync(join(tmpdir(), "runctl-bin-"));
    try {
      // Preloaded into the bin: refuses every import from node_modules (ESM), and reports at exit the
      // CommonJS packages that were loaded anyway (require.cache).
      const hook = `data:text/javascript,${encodeURIComponent("export async function resolve(s, c, next) { const r = await next(s, c); if (r.url.includes('/node_modules/')) throw new Error('dependency loaded: ' + r.url); return r; }")}`;
      const preload = `data:text/javascript,${encodeURIComponent(
        `import { register, createRequire } from "node:module"; register(${JSON.stringify(hook)}); const cache = createRequire(process.cwd() + "/").cache; process.on("exit", () => { const deps = Object.keys(cache).filter((k) => k.includes("/node_modules/")); if (deps.length > 0) process.stderr.write("dependencies loaded: " + deps.join(" ")); });`,
      )}`;
      const bin = (...args: string[]) => spawnSync("node", ["--import", preload, "dist/cli.js", ...args], { encoding: "utf8", env: { ...process.env, RUNCTL_HOME: home } });
      const version = bin("--version");
      expect(version.stderr).toBe("");
      expect(version.stdout.trim()).toBe((JSON.parse(readFileSync("package.json", "utf8")) as { version: string }).version);
      const ls = bin("ls", "--json");
      expect(ls.stderr).toBe("");
      expect((JSON.parse(ls.stdout) as { runs: unknown[] }).runs).toEqual([]);
      // The control: a sweep with a region loads the SDK and the AWS SDK, which the hook refuses.
      const sweep = bin("sweep", "--dry-run", "--region", "us-east-1");
      expect(sweep.status).not.toBe(0);
      expect(sweep.stderr).toContain("dependency loaded");
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  it("declares ESM, no side effects, node >= 20.19 and ships only dist", () => {
    const pkg = JSON.parse(readFileSync("package.json", "utf8")) as Record<string, unknown>;
    expect(pkg["type"]).toBe("module");
    expect(pkg["sideEffects"]).toBe(false);
    expect(pkg["files"]).toEqual(["dist"]);
    expect((pkg["engines"] as Record<string, string>)["node"]).toBe(">=20.19");
  });
});
