import { spawn, spawnSync, type SpawnSyncReturns } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * The package as an npm user gets it: `npm pack` of the built dist/, installed into a fresh project
 * with no tsx and no TypeScript, driven through `npx runctl` with the `node` on PATH (Node 22 or 24).
 */
const work = mkdtempSync(join(tmpdir(), "runctl-consumer-"));
const project = join(work, "project");
const home = join(work, "home");

function sh(command: string, args: string[], env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  return spawnSync(command, args, { cwd: project, encoding: "utf8", env: { ...process.env, RUNCTL_HOME: home, ...env }, timeout: 120_000 });
}

beforeAll(() => {
  // dist/ is what the tarball ships: `npm run test:e2e` and `npm test` build it first.
  expect(existsSync("dist/cli.js")).toBe(true);
  const packed = spawnSync("npm", ["pack", "--pack-destination", work, "--ignore-scripts", "--json"], { encoding: "utf8" });
  expect(packed.status).toBe(0);
  const tarball = join(work, (JSON.parse(packed.stdout) as { filename: string }[])[0]!.filename);
  mkdirSync(project);
  mkdirSync(home);
  // The runtime dependency closure pinned from this repository's lockfile (the entries that are not
  // dev-only), so npm installs the tarball from the cache `npm ci` filled: no registry needed.
  const lock = JSON.parse(readFileSync("package-lock.json", "utf8")) as { packages: Record<string, { dev?: boolean; link?: boolean; version?: string; dependencies?: unknown; bin?: unknown; engines?: unknown }> };
  const root = lock.packages[""]!;
  const spec = `file:${tarball}`;
  const packages: Record<string, unknown> = {
    "": { name: "consumer", version: "1.0.0", dependencies: { runctl: spec } },
    "node_modules/runctl": { version: root.version, resolved: spec, license: "MIT", dependencies: root.dependencies, bin: root.bin, engines: root.engines },
  };
  for (const [path, entry] of Object.entries(lock.packages)) if (path.startsWith("node_modules/") && !entry.dev && !entry.link) packages[path] = entry;
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "consumer", version: "1.0.0", private: true, type: "module", dependencies: { runctl: spec } }, null, 2));
  writeFileSync(join(project, "package-lock.json"), JSON.stringify({ name: "consumer", version: "1.0.0", lockfileVersion: 3, requires: true, packages }, null, 2));
  // --ignore-scripts: ssh2's optional native speed-up would compile (and fetch Node headers) otherwise.
  // Offline only: tests reach nothing beyond this machine. ENOTCACHED means this repository's own
  // `npm ci` has not run with this npm cache.
  const install = sh("npm", ["ci", "--offline", "--no-audit", "--no-fund", "--ignore-scripts"]);
  expect(install.stderr).not.toMatch(/npm error/);
  expect(install.status).toBe(0);
  expect(existsSync(join(project, "node_modules", "tsx"))).toBe(false);
}, 180_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("a fresh consumer project on the node on PATH", () => {
  it("npx runctl quickstart trains the bundled trainer and verifies its latest checkpoint (exit 0)", () => {
    const run = sh("npx", ["runctl", "quickstart"]);
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^run \S+\n {2}checkpoints in .*\/project\/\.runctl\/checkpoints\n/);
    expect(run.stdout).toMatch(/ {2}step 60 {2}loss \d/);
    expect(run.stdout).toMatch(/latest checkpoint: step-0*60 \(step 60, \d+ bytes, 1 files\) — sha256 verified\n$/);
    expect(existsSync(join(project, ".runctl", "checkpoints"))).toBe(true);
  });

  it("Ctrl-C on the quickstart cancels its run (the trainer saves a last checkpoint) and exits 130", async () => {
    // The bin itself (one process, so the SIGINT reaches it as a terminal's Ctrl-C would).
    const child = spawn(process.execPath, [join(project, "node_modules", "runctl", "dist", "cli.js"), "quickstart", "--steps", "1000000", "--dir", "ctrl-c"], {
      cwd: project,
      env: { ...process.env, RUNCTL_HOME: home },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stderr.resume();
    const closed = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
    child.stdout.on("data", (chunk: Buffer) => {
      const first = !out.includes("  step 10 ");
      out += chunk.toString();
      if (first && out.includes("  step 10 ")) child.kill("SIGINT");
    });
    expect(await closed).toBe(130);
    expect(out).toMatch(/• exit: canceled/);
    expect(out).toMatch(/latest checkpoint: step-\d+ \(step \d+, \d+ bytes, 1 files\) — sha256 verified\n$/);
  });

  it("npx runctl plan plan.ts: a TypeScript plan without tsx (type stripping), or exactly what to do", () => {
    mkdirSync(join(project, "training"), { recursive: true });
    writeFileSync(join(project, "training", "train.py"), 'print("hello")\n');
    writeFileSync(
      join(project, "plan.ts"),
      'import { Runctl, local, localDir, type RunPlan } from "runctl";\n\nexport const plan: RunPlan = Runctl.instance(local()).sync("./training").checkpoints({ storage: localDir("./ckpt"), keep: 2 });\nexport const script: string = "train.py";\n',
    );
    const plan = sh("npx", ["runctl", "plan", "plan.ts"]);
    if (process.features.typescript) {
      expect(plan.stderr).toBe("");
      expect(plan.status).toBe(0);
      expect(plan.stdout).toContain("plan: train.py on local\nsteps:\n  1. provision a machine from local\n");
      expect(plan.stdout).toMatch(/checkpoints: file:\/\/.*\/ckpt, keep 2\n/);
    } else {
      expect(plan.status).toBe(2);
      expect(plan.stderr).toContain("NODE_OPTIONS=--experimental-strip-types");
    }
    // The same Node with type stripping off: the typed error says what to do.
    const off = sh("npx", ["runctl", "plan", "plan.ts"], { NODE_OPTIONS: "--no-experimental-strip-types" });
    expect(off.status).toBe(2);
    expect(off.stderr).toMatch(/^runctl: .*plan\.ts is TypeScript and this Node .* NODE_OPTIONS=--experimental-strip-types, or install tsx .*\(UNSUPPORTED\)\n$/);
  });

  it("plan errors are typed, exit 2, with no Node stack: TS-only syntax, a non-module, a missing file", () => {
    writeFileSync(join(project, "enum-plan.ts"), 'enum Size { Small }\nexport const plan = Size.Small;\nexport const script = "train.py";\n');
    const enumPlan = sh("npx", ["runctl", "plan", "enum-plan.ts", "--json"]);
    expect(enumPlan.status).toBe(2);
    const doc = JSON.parse(enumPlan.stdout) as { schemaVersion: number; error: { code: string; message: string } };
    expect(doc.schemaVersion).toBe(1);
    if (process.features.typescript) {
      expect(doc.error.code).toBe("INVALID_ARGUMENT");
      expect(doc.error.message).toMatch(/enum-plan\.ts uses TypeScript that Node's type stripping cannot load .*install tsx/);
    }
    writeFileSync(join(project, "README.md"), "# consumer\n");
    for (const file of ["README.md", "no-such-plan.ts"]) {
      const bad = sh("npx", ["runctl", "plan", file]);
      expect(bad.status).toBe(2);
      expect(bad.stderr).toMatch(/^runctl: plan: .*\(USAGE\)\n/);
      expect(bad.stderr).not.toMatch(/\n\s+at /);
    }
  });

  it("npx runctl doctor checks this machine before a first run: Python, disk, GPU; exit 0 when nothing failed", () => {
    const human = sh("npx", ["runctl", "doctor"]);
    expect(human.stderr).toBe("");
    expect(human.status).toBe(0);
    expect(human.stdout).toMatch(/\[ok\] +.*[Pp]ython.*3\.\d+/);
    expect(human.stdout).toMatch(/^doctor: \d+ ok, \d+ warning\(s\), 0 failed/m);
    const json = sh("npx", ["runctl", "doctor", "--json"]);
    expect(json.status).toBe(0);
    const doc = JSON.parse(json.stdout) as { schemaVersion: number; ok: boolean; checks: { id: string; status: string }[] };
    expect(doc.schemaVersion).toBe(1);
    expect(doc.ok).toBe(true);
    expect(doc.checks.length).toBeGreaterThanOrEqual(3);
    expect(doc.checks.filter((c) => c.status === "fail")).toEqual([]);
    expect(doc.checks.find((c) => c.id === "python")?.status).toBe("ok");
  });
});
