import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { runCli, type CliIo } from "../../src/cli/run-cli.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

const home = useTempRunctlHome("cli-quickstart");
const repo = fileURLToPath(new URL("../..", import.meta.url));

interface Outcome {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

/** The CLI in-process, with captured streams; `onOut` sees stdout as it grows. */
async function cli(argv: string[], extra: Partial<CliIo> = {}, onOut?: (out: string) => void): Promise<Outcome> {
  let out = "";
  let err = "";
  const stdout = { write: (s: string) => ((out += s), onOut?.(out)) };
  const code = await runCli(argv, { stdout, stderr: { write: (s: string) => (err += s) }, cwd: repo, ...extra });
  return { code, out, err };
}

function runs(): string[] {
  const dir = join(home, "runs");
  return existsSync(dir) ? readdirSync(dir) : [];
}

describe("runctl quickstart", () => {
  it("trains the bundled template trainer, prints the quickstart's progress and verifies the latest checkpoint", async () => {
    const dir = tempDir("qs-cli-ckpt");
    const { code, out, err } = await cli(["quickstart", "--dir", dir]);
    expect(err).toBe("");
    expect(code).toBe(0);
    const runId = /^run (\S+)\n/.exec(out)?.[1];
    expect(runId).toBeDefined();
    expect(out).toContain(`  checkpoints in ${dir}\n`);
    expect(out).toMatch(/• training\n/);
    expect(out).toMatch(/ {2}step 60 {2}loss \d+\.\d{4} {2}acc \d+\.\d{4}\n/);
    expect(out).toMatch(/ {2}checkpoint step-0*20 committed \(1 files, \d+ bytes\)\n/);
    expect(out).toContain("• exit: succeeded (code 0)\n");
    expect(out).toMatch(/latest checkpoint: step-0*60 \(step 60, \d+ bytes, 1 files\) — sha256 verified\n$/);
    // keep: 3 in the folder asked for: the run's three checkpoints and its LATEST pointer.
    expect(readdirSync(join(dir, runId!, "checkpoints")).filter((name) => name.startsWith("step-")).sort()).toEqual(["step-00000020", "step-00000040", "step-00000060"]);
    expect(readFileSync(join(dir, runId!, "LATEST"), "utf8").trim()).toMatch(/^step-0*60$/);
  });

  it("--json: one JSON line per event with schemaVersion 1, the run first and the verified result last; --steps reaches the trainer", async () => {
    const { code, out } = await cli(["quickstart", "--json", "--steps", "20", "--dir", tempDir("qs-json")]);
    expect(code).toBe(0);
    const lines = out.trimEnd().split("\n").map((line) => JSON.parse(line) as { schemaVersion: number; type: string; step?: number; verified?: boolean; latest?: { step: number } });
    expect(lines.every((line) => line.schemaVersion === 1)).toBe(true);
    expect(lines[0]?.type).toBe("run");
    expect(lines.at(-1)).toMatchObject({ type: "result", status: "succeeded", verified: true, latest: { step: 20 } });
    expect(lines.filter((line) => line.type === "metric").map((line) => line.step)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
  });

  it("Ctrl-C cancels the run (the trainer saves on SIGTERM) and exits 130", async () => {
    const controller = new AbortController();
    const { code, out } = await cli(["quickstart", "--json", "--steps", "1000000", "--dir", tempDir("qs-abort")], { signal: controller.signal }, (text) => {
      if (!controller.signal.aborted && text.includes('"type":"metric"')) controller.abort();
    });
    expect(code).toBe(130);
    const lines = out.trimEnd().split("\n").map((line) => JSON.parse(line) as { type: string; status?: string });
    expect(lines.find((line) => line.type === "exit")).toMatchObject({ status: "canceled" });
    expect(lines.at(-1)).toMatchObject({ type: "result", status: "canceled" });
  });

  it("without python3 on PATH: PYTHON_NOT_FOUND, exit 1, and no run started", async () => {
    const before = runs();
    const path = process.env["PATH"];
    process.env["PATH"] = tempDir("qs-empty-path");
    try {
      const { code, out, err } = await cli(["quickstart"]);
      expect(code).toBe(1);
      expect(out).toBe("");
      expect(err).toMatch(/^runctl: quickstart needs python3 .* \(PYTHON_NOT_FOUND\)\n$/);
      const json = await cli(["quickstart", "--json"]);
      expect(JSON.parse(json.out)).toEqual({ schemaVersion: 1, error: { code: "PYTHON_NOT_FOUND", message: expect.stringContaining("python3") } });
    } finally {
      process.env["PATH"] = path;
    }
    expect(runs()).toEqual(before);
  });

  it("bad flags are usage errors (exit 2)", async () => {
    for (const argv of [["quickstart", "--steps", "0"], ["quickstart", "--steps", "1e3"], ["quickstart", "extra"], ["quickstart", "--dir", ""], ["quickstart", "--dir", "package.json"]]) {
      const { code, err } = await cli(argv);
      expect(code).toBe(2);
      expect(err).toMatch(/\(USAGE\)\n/);
    }
  });
});

describe("runctl plan: every bad FILE is a typed error, never a raw Node error", () => {
  it("a non-module, a missing file, a folder, a module without the exports: exit 2; a module that fails to load: PLAN_LOAD_FAILED", async () => {
    const readme = await cli(["plan", "README.md"]);
    expect(readme.code).toBe(2);
    expect(readme.err).toMatch(/^runctl: plan: README\.md is not a plan module; FILE must be JavaScript or TypeScript .* \(USAGE\)\n/);
    const readmeJson = await cli(["plan", "README.md", "--json"]);
    expect(JSON.parse(readmeJson.out)).toMatchObject({ schemaVersion: 1, error: { code: "USAGE" } });
    expect((await cli(["plan", "no-such-plan.ts"])).code).toBe(2);
    expect((await cli(["plan", "examples"])).err).toMatch(/is a folder/);

    const dir = tempDir("plan-files");
    writeFileSync(join(dir, "empty.mjs"), "export const nothing = 1;\n");
    const empty = await cli(["plan", join(dir, "empty.mjs"), "--json"]);
    expect(empty.code).toBe(2);
    expect(JSON.parse(empty.out)).toEqual({ schemaVersion: 1, error: { code: "INVALID_ARGUMENT", message: expect.stringMatching(/must export plan .* it exports nothing\.$/) } });

    writeFileSync(join(dir, "broken.mjs"), 'import { nope } from "./missing-module.mjs";\nexport const plan = nope;\n');
    const broken = await cli(["plan", join(dir, "broken.mjs")]);
    expect(broken.code).toBe(1);
    expect(broken.err).toMatch(/^runctl: could not load the plan module .*broken\.mjs: .*missing-module\.mjs.* \(PLAN_LOAD_FAILED\)\n/);
  });
});
