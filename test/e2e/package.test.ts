import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, posix } from "node:path";
import { describe, expect, it } from "vitest";

/** Relative link targets in markdown text: inline links and images, and reference definitions; code left out. */
function relativeLinks(markdown: string): string[] {
  const text = markdown.replace(/^(```|~~~)[\s\S]*?^\1/gm, "").replace(/`[^`\n]*`/g, "");
  const targets = [...text.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g), ...text.matchAll(/^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)/gm)].map((m) => m[1] as string);
  return targets.filter((target) => !/^[a-z][a-z0-9+.-]*:/i.test(target) && !target.startsWith("#"));
}

/**
 * The packages a `node` run of `script` has loaded: CommonJS packages land in `require.cache`
 * whether required or imported. An ES-module script gets a `require` of its own to read the cache.
 */
function loadedPackages(script: string, type: "commonjs" | "module"): string[] {
  const report = `console.log(JSON.stringify([...new Set(Object.keys(require.cache).flatMap((k) => /node_modules\\/((?:@[^/]+\\/)?[^/]+)/.exec(k)?.[1] ?? []))]))`;
  const args =
    type === "commonjs"
      ? ["-e", `${script}; ${report}`]
      : ["--input-type=module", "-e", `import { createRequire } from "node:module"; const require = createRequire(import.meta.url); ${script}; ${report}`];
  return JSON.parse(execFileSync("node", args, { encoding: "utf8" })) as string[];
}

// `npm test` builds with tsup before vitest runs, so dist/ is the package a user installs.
describe("the built package", () => {
  it("is ESM only, and loads with require() (Node >= 22) and import(), with the same named exports", () => {
    const names = ["Runctl", "RunPlan", "TrainingRun", "RunctlError", "CommandError", "isRunctlError", "local", "localDir", "checkpointStore", "localTransport", "shellQuote"];
    const cjs = execFileSync("node", ["-e", "const r = require('runctl'); console.log(JSON.stringify(Object.keys(r).sort())); r.validateStorageKey('a/b');"], { encoding: "utf8" });
    const esm = execFileSync("node", ["--input-type=module", "-e", "const r = await import('runctl'); console.log(JSON.stringify(Object.keys(r).sort()));"], { encoding: "utf8" });
    expect(JSON.parse(cjs)).toEqual(JSON.parse(esm));
    for (const name of names) expect(JSON.parse(cjs)).toContain(name);
    expect(JSON.parse(cjs)).not.toContain("default");
    // require() gets the ES module itself (one module instance), not a second CommonJS build.
    const same = execFileSync("node", ["--input-type=module", "-e", "import { createRequire } from 'node:module'; const require = createRequire(process.cwd() + '/'); const r = require('runctl'); const m = await import('runctl'); console.log(r.RunctlError === m.RunctlError);"], { encoding: "utf8" });
    expect(same.trim()).toBe("true");
    expect(existsSync("dist/index.d.ts")).toBe(true);
    for (const cjsFile of ["dist/index.cjs", "dist/index.d.cts", "dist/aws.cjs", "dist/aws.d.cts"]) expect(existsSync(cjsFile)).toBe(false);
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
  });

  it("has a runctl/s3 entry: S3 storage alone, the same functions as runctl/aws, loading neither EC2's nor SSM's client nor ssh2", () => {
    const script = (load: string): string =>
      `${load}; let same = false; try { s3.s3("not-a-uri"); } catch (e) { same = e instanceof root.RunctlError && e.code === "INVALID_URI"; } const uri = s3.parseS3Uri("s3://ml-data/a/b"); console.log(JSON.stringify({ keys: Object.keys(s3).sort(), same, sameFn: s3.s3 === aws.s3, uri }));`;
    type Loaded = { keys: string[]; same: boolean; sameFn: boolean; uri: { bucket: string; prefix: string } };
    const cjs = JSON.parse(execFileSync("node", ["-e", script("const root = require('runctl'); const aws = require('runctl/aws'); const s3 = require('runctl/s3')")], { encoding: "utf8" })) as Loaded;
    const esm = JSON.parse(
      execFileSync("node", ["--input-type=module", "-e", script("const root = await import('runctl'); const aws = await import('runctl/aws'); const s3 = await import('runctl/s3')")], { encoding: "utf8" }),
    ) as Loaded;
    for (const loaded of [cjs, esm]) {
      expect(loaded.keys).toEqual(["parseS3Uri", "s3", "s3FromDescriptor"]);
      expect(loaded.same).toBe(true);
      // One module instance: runctl/aws re-exports the very same functions.
      expect(loaded.sameFn).toBe(true);
      expect(loaded.uri).toMatchObject({ bucket: "ml-data", prefix: "a/b" });
    }
    expect(existsSync("dist/s3.d.ts")).toBe(true);
    // What the entry loads: the S3 client, and none of the heavier AWS clients or ssh2.
    const packages = loadedPackages(`const { s3 } = await import("runctl/s3"); s3("s3://ml-data")`, "module");
    expect(packages).toContain("@aws-sdk/client-s3");
    for (const heavy of ["@aws-sdk/client-ec2", "@aws-sdk/client-ssm", "ssh2"]) expect(packages).not.toContain(heavy);
  });

  it("brands its errors: instanceof and isRunctlError hold across two copies of the package, and only for runctl errors", () => {
    // Two copies of the built package side by side, as two versions in node_modules would be; both
    // resolve their dependencies from this repository's node_modules.
    const dir = mkdtempSync(join(tmpdir(), "runctl-copies-"));
    try {
      symlinkSync(join(process.cwd(), "node_modules"), join(dir, "node_modules"));
      for (const copy of ["a", "b"]) {
        mkdirSync(join(dir, copy));
        cpSync("dist", join(dir, copy, "dist"), { recursive: true });
        cpSync("package.json", join(dir, copy, "package.json"));
      }
      // Copy a is loaded with require(), copy b with import(): the brand must hold either way.
      const script = `
        import { createRequire } from "node:module";
        const a = createRequire(${JSON.stringify(join(dir, "a") + "/")})("./dist/index.js");
        const b = await import(${JSON.stringify(`file://${join(dir, "b", "dist", "index.js")}`)});
        let fromA; try { a.validateStorageKey("../escape"); } catch (e) { fromA = e; }
        const failure = { command: "false", host: "local", exitCode: 1, signal: null, durationMs: 1, stdoutTail: "", stderrTail: "" };
        const commandFromA = new a.CommandError(failure);
        const plain = new Error("plain");
        const lookalike = Object.assign(new Error("lookalike"), { code: "INVALID_ARGUMENT", retryable: false });
        class Mine extends b.RunctlError {}
        console.log(JSON.stringify({
          distinctClasses: a.RunctlError !== b.RunctlError,
          code: fromA?.code,
          sameCopy: fromA instanceof a.RunctlError,
          otherCopy: fromA instanceof b.RunctlError,
          otherCopyIs: b.isRunctlError(fromA),
          commandOtherCopy: commandFromA instanceof b.CommandError && commandFromA instanceof b.RunctlError && b.isRunctlError(commandFromA),
          runctlIsNotCommand: fromA instanceof b.CommandError,
          plain: plain instanceof b.RunctlError || b.isRunctlError(plain) || a.isRunctlError(plain),
          lookalike: lookalike instanceof b.RunctlError || b.isRunctlError(lookalike),
          primitives: [null, undefined, "RunctlError", 42].some((v) => v instanceof b.RunctlError || b.isRunctlError(v)),
          subclass: new Mine("ABORTED", "x") instanceof Mine && b.isRunctlError(new Mine("ABORTED", "x")) && !(fromA instanceof Mine),
        }));`;
      const result = JSON.parse(execFileSync("node", ["--input-type=module", "-e", script], { encoding: "utf8", cwd: dir })) as Record<string, unknown>;
      expect(result).toEqual({
        distinctClasses: true,
        code: "INVALID_STORAGE_KEY",
        sameCopy: true,
        otherCopy: true,
        otherCopyIs: true,
        commandOtherCopy: true,
        runctlIsNotCommand: false,
        plain: false,
        lookalike: false,
        primitives: false,
        subclass: true,
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
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

  it("the root entry loads ssh2, ignore and zod only when used (require and import); runctl/aws loads ssh2", () => {
    const cjs = loadedPackages(`require("runctl")`, "commonjs");
    const esm = loadedPackages(`await import("runctl")`, "module");
    const aws = loadedPackages(`await import("runctl/aws")`, "module");
    for (const name of ["ssh2", "ignore", "zod"]) {
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

  it("declares ESM only, no side effects, node >= 22, MIT with a LICENSE, and where the project lives", () => {
    const pkg = JSON.parse(readFileSync("package.json", "utf8")) as Record<string, unknown>;
    expect(pkg["type"]).toBe("module");
    expect(pkg["sideEffects"]).toBe(false);
    expect((pkg["engines"] as Record<string, string>)["node"]).toBe(">=22");
    expect(pkg["main"]).toBeUndefined();
    // No "require" condition anywhere in "exports": require() gets the ES module (require(esm)).
    expect(JSON.stringify(pkg["exports"])).not.toContain("require");
    expect(pkg["license"]).toBe("MIT");
    expect(readFileSync("LICENSE", "utf8")).toMatch(/^MIT License\n\nCopyright \(c\) \d{4} runctl contributors\n/);
    expect(pkg["repository"]).toEqual({ type: "git", url: "git+https://github.com/runctl/runctl.git" });
    expect(pkg["homepage"]).toBe("https://github.com/runctl/runctl#readme");
    expect(pkg["bugs"]).toEqual({ url: "https://github.com/runctl/runctl/issues" });
  });

  it("ships every file that README.md and the shipped markdown link to (the npm page's links resolve)", () => {
    const packed = JSON.parse(execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { encoding: "utf8" })) as { files: { path: string }[] }[];
    const files = new Set(packed[0]!.files.map((file) => file.path));
    for (const must of ["README.md", "LICENSE", "package.json", "dist/index.js", "dist/aws.js", "dist/cli.js", "docs/cli.md", "training/train.py"]) expect(files).toContain(must);
    // Generated API pages and the tests stay out.
    expect([...files].filter((file) => file.startsWith("docs/api/") || file.startsWith("src/") || /\.test\.ts$/.test(file))).toEqual([]);
    const markdown = [...files].filter((file) => file.endsWith(".md"));
    expect(markdown.filter((file) => file.startsWith("docs/")).length).toBeGreaterThan(5);
    const broken: string[] = [];
    let checked = 0;
    for (const file of markdown) {
      for (const link of relativeLinks(readFileSync(file, "utf8"))) {
        const target = posix.normalize(posix.join(dirname(file), decodeURI(link.replace(/[?#].*$/, ""))));
        const found = target.endsWith("/") ? [...files].some((f) => f.startsWith(target)) : files.has(target);
        checked++;
        if (!found) broken.push(`${file}: ${link}`);
      }
    }
    expect(broken).toEqual([]);
    expect(checked).toBeGreaterThan(10);
  });

  it("finds a broken relative link (the check above can fail)", () => {
    const links = relativeLinks('see [a](docs/a.md#x), ![i](img/b.png "t")\n[c]: ../c.md\n`[no](code.md)` [w](https://x.dev/a.md) [s](#section)\n```\n[no](fenced.md)\n```\n');
    expect(links).toEqual(["docs/a.md#x", "img/b.png", "../c.md"]);
  });
});
