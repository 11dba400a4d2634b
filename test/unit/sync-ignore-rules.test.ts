import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { DEFAULT_EXCLUDES, IgnoreRules } from "../../src/sync/ignore-rules.js";
import { scanTree } from "../../src/sync/scan-tree.js";

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function tree(files: Record<string, string>): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "runctl-ignore-"));
  dirs.push(root);
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), content);
  }
  return root;
}

async function synced(root: string, options: Parameters<typeof scanTree>[1] = {}): Promise<string[]> {
  return (await scanTree(root, options)).files.map((f) => f.path);
}

describe("IgnoreRules (pure)", () => {
  it("excludes the defaults at any depth", () => {
    const rules = IgnoreRules.create();
    expect(DEFAULT_EXCLUDES).toEqual([".git", "node_modules", "__pycache__", ".venv", "*.pyc", ".DS_Store"]);
    expect(rules.ignores(".git", true)).toBe(true);
    expect(rules.ignores("a/b/node_modules", true)).toBe(true);
    expect(rules.ignores("pkg/__pycache__", true)).toBe(true);
    expect(rules.ignores(".venv", true)).toBe(true);
    expect(rules.ignores("m/x.pyc")).toBe(true);
    expect(rules.ignores("x/.DS_Store")).toBe(true);
    expect(rules.ignores("train.py")).toBe(false);
    expect(rules.ignores("src", true)).toBe(false);
  });

  it("can turn the defaults off but keeps extraExcludes", () => {
    const rules = IgnoreRules.create({ defaults: false, extraExcludes: ["/checkpoints/"] });
    expect(rules.ignores("node_modules", true)).toBe(false);
    expect(rules.ignores("checkpoints", true)).toBe(true);
    expect(rules.ignores("sub/checkpoints", true)).toBe(false);
  });

  it("reads nested patterns relative to their own folder", () => {
    const rules = IgnoreRules.create()
      .withIgnoreFiles("", { gitignore: "*.log\n" })
      .withIgnoreFiles("sub", { gitignore: "/build\n!keep.log\ndocs/*.md\n" });
    expect(rules.ignores("a.log")).toBe(true);
    expect(rules.ignores("sub/keep.log")).toBe(false);
    expect(rules.ignores("sub/deep/keep.log")).toBe(false);
    expect(rules.ignores("sub/other.log")).toBe(true);
    expect(rules.ignores("sub/build", true)).toBe(true);
    expect(rules.ignores("sub/x/build", true)).toBe(false);
    expect(rules.ignores("build", true)).toBe(false);
    expect(rules.ignores("sub/docs/a.md")).toBe(true);
    expect(rules.ignores("sub/x/docs/a.md")).toBe(false);
  });

  it("treats glob characters in folder names literally", () => {
    const rules = IgnoreRules.create().withIgnoreFiles("we[ir]d*", { gitignore: "*.tmp\n" });
    expect(rules.ignores("we[ir]d*/a.tmp")).toBe(true);
    expect(rules.ignores("wei/a.tmp")).toBe(false);
    expect(rules.ignores("weirdo/a.tmp")).toBe(false);
  });

  it("applies .runctlignore after .gitignore and the call list last", () => {
    const rules = IgnoreRules.create({ ignore: ["data/", "!data.keep"] })
      .withIgnoreFiles("", { gitignore: "*.bin\ndata.keep\n", runctlignore: "!weights.bin\nnotes.txt\n" });
    expect(rules.ignores("x.bin")).toBe(true);
    expect(rules.ignores("weights.bin")).toBe(false);
    expect(rules.ignores("notes.txt")).toBe(true);
    expect(rules.ignores("data", true)).toBe(true);
    expect(rules.ignores("data.keep")).toBe(false);
  });

  it("explains which pattern from which source decided", () => {
    const rules = IgnoreRules.create().withIgnoreFiles("sub", { gitignore: "*.log\n" });
    expect(rules.explain("m.pyc")).toEqual({ ignored: true, pattern: "*.pyc", source: "defaults" });
    expect(rules.explain("sub/a.log")).toEqual({ ignored: true, pattern: "*.log", source: "sub/.gitignore" });
    expect(rules.explain("a.log")).toEqual({ ignored: false });
    const negated = IgnoreRules.create({ ignore: ["!node_modules/"] });
    expect(negated.explain("node_modules", true)).toEqual({ ignored: false, pattern: "!node_modules/", source: "ignore option" });
  });
});

describe("ignore rules during a walk", () => {
  it("honours nested .gitignore, .runctlignore, the call list and defaults", async () => {
    const root = await tree({
      ".gitignore": "*.log\n/out/\n",
      ".runctlignore": "!important.log\nsecret/\n",
      "train.py": "x",
      "a.log": "x",
      "important.log": "x",
      "out/model.bin": "x",
      "src/out/kept.txt": "x",
      "src/.gitignore": "*.tmp\n!keep.log\n",
      "src/a.tmp": "x",
      "src/deep/b.tmp": "x",
      "src/keep.log": "x",
      "src/deep/keep.log": "x",
      "secret/key": "x",
      "data/big.bin": "x",
      "node_modules/m/index.js": "x",
      "pkg/__pycache__/m.pyc": "x",
      "pkg/m.py": "x",
      "pkg/stale.pyc": "x",
      ".git/HEAD": "x",
      ".venv/bin/python": "x",
      ".DS_Store": "x",
    });
    expect(await synced(root, { ignore: ["data/"] })).toEqual([
      ".gitignore",
      ".runctlignore",
      "important.log",
      "pkg/m.py",
      "src/.gitignore",
      "src/deep/keep.log",
      "src/keep.log",
      "src/out/kept.txt",
      "train.py",
    ]);
  });

  it("does not resurrect a file inside an excluded folder (git semantics)", async () => {
    const root = await tree({
      ".gitignore": "build/\n!build/keep.txt\ncache/*\n!cache/keep.txt\n",
      "build/keep.txt": "x",
      "build/other.txt": "x",
      "cache/keep.txt": "x",
      "cache/other.txt": "x",
    });
    expect(await synced(root)).toEqual([".gitignore", "cache/keep.txt"]);
  });

  it("lets a later layer re-include a folder an earlier one excluded", async () => {
    const root = await tree({
      ".gitignore": "build/\n",
      ".runctlignore": "!build/\n",
      "build/a.txt": "x",
      "node_modules/x.js": "x",
    });
    expect(await synced(root, { ignore: ["!node_modules/"] })).toEqual([".gitignore", ".runctlignore", "build/a.txt", "node_modules/x.js"]);
  });

  it("excludes extraExcludes such as the checkpoint folder", async () => {
    const root = await tree({ "checkpoints/step-1.pt": "x", "train.py": "x" });
    expect(await synced(root, { extraExcludes: ["/checkpoints/"] })).toEqual(["train.py"]);
  });

  it("matches git ls-files --others --exclude-standard on a nested tree", async () => {
    const root = await tree({
      ".gitignore": "*.log\n/other/\n!other/ok.txt\nlogs/*\n!logs/keep/\n**/tmp-*\n",
      "sub/.gitignore": "/build\n!important.log\nx/*.md\n# a comment\n\n\\#hash\n",
      "sub/deep/.gitignore": "*.md\n!README.md\n",
      "a.log": "",
      "#hash": "",
      "sub/#hash": "",
      "sub/a.log": "",
      "sub/important.log": "",
      "sub/deep/important.log": "",
      "sub/build/z": "",
      "sub/deep/build": "",
      "sub/x/a.md": "",
      "sub/deep/x.md": "",
      "sub/deep/README.md": "",
      "sub/deep/x/a.md": "",
      "other/ok.txt": "",
      "logs/x": "",
      "logs/keep/y": "",
      "logs/keep/z.log": "",
      "a/tmp-1/b": "",
      "a/b/tmp-2": "",
      "a/c": "",
      "with space/f g.txt": "",
    });
    execFileSync("git", ["init", "-q", root]);
    const fromGit = execFileSync("git", ["-c", "core.quotePath=false", "ls-files", "--others", "--exclude-standard"], { cwd: root, encoding: "utf8" })
      .split("\n")
      .filter(Boolean)
      .sort();
    const ours = await synced(root, { defaults: false, extraExcludes: [".git"] });
    expect(ours).toEqual(fromGit);
    expect(ours).toContain("sub/deep/important.log");
    expect(ours).not.toContain("logs/keep/z.log");
  });
});
