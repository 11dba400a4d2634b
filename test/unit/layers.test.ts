import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDir } from "../support/temp-home.js";

const script = join(import.meta.dirname, "..", "..", "scripts", "check-layers.mjs");

function checkLayers(...args: string[]): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [script, ...args], { encoding: "utf8" });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** A src/ tree with the given files (path -> source). */
function tree(files: Record<string, string>): string {
  const root = tempDir("layers");
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

describe("folder layers (scripts/check-layers.mjs)", () => {
  it("src/ has no folder-level import cycle and every import reaches down", () => {
    const r = checkLayers();
    expect(r.out).toContain("no cycles, every import reaches down");
    expect(r.status).toBe(0);
  });

  it("fails on a cycle and on an import that reaches up, naming the files", () => {
    const src = tree({
      "plan/run-plan.ts": 'import { startRun } from "../engine/start-run.js";\n',
      "engine/start-run.ts": 'import type { PlanState } from "../plan/plan-types.js";\n',
      "run/training-run.ts": '// import { x } from "../plan/a.js"; a comment is not an import\nexport {};\n',
    });
    const r = checkLayers("--src", src);
    expect(r.status).toBe(1);
    expect(r.out).toContain("cycle between folders: engine <-> plan");
    expect(r.out).toContain("engine -> plan: imports a higher layer");
    expect(r.out).toContain("engine/start-run.ts -> ../plan/plan-types.js");
    expect(r.out).not.toContain("run -> plan");
  });

  it("fails on a folder placed in no layer", () => {
    const r = checkLayers("--src", tree({ "gadgets/x.ts": 'import { y } from "../util/y.js";\n', "util/y.ts": "export const y = 1;\n" }));
    expect(r.status).toBe(1);
    expect(r.out).toContain("src/gadgets/ is in no layer");
  });
});
