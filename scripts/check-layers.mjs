#!/usr/bin/env node
// Folder-level layering check for src/ (docs/architecture.md, "Layers").
//
// Reads every import specifier of src/**/*.ts (static `import`/`export ... from`, side-effect
// `import "x"`, and `import("x")`), maps each relative import to its top folder under src/
// (files directly in src/ are the folder "(root)"), then fails when
//   - the folder graph has a cycle, or
//   - a folder imports a folder of its own or of a higher layer (layers only reach down), or
//   - a folder is missing from LAYERS (a new folder must be placed deliberately).
// Regex, not the compiler: import specifiers are simple enough, and this must run in well under a
// second before the tests. Usage: `node scripts/check-layers.mjs [--graph] [--src DIR]` (`--src`
// checks another tree; the tests use it to show that a cycle fails).
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * Top to bottom. A folder may import only folders in a LOWER row (a later entry). Folders in one
 * row may not import each other. errors/ and util/ are leaves: they import nothing in src/.
 */
export const LAYERS = [
  ["cli"], // the command line: a user of the public API
  ["(root)"], // index.ts, runctl.ts: the public entry points
  ["plan"], // the fluent RunPlan: validates input, produces a RunSpec
  ["engine"], // runs a RunSpec: launch, staging, follow, recover
  ["run"], // TrainingRun, the journal, run events (never imports plan/)
  ["agent"], // installs the Python agent on a machine
  ["providers"], // where machines come from (local, ssh-hosts, ec2) and sweep types
  ["sync"], // folder sync over a transport
  ["checkpoints"], // committed checkpoints in a storage
  ["transport"], // how commands and files reach a machine (local, ssh, ssm)
  ["storage"], // where bytes live (local dir, machine dir, s3) and the resolver
  ["aws", "ledger", "cost"], // AWS call layer, resource ledger, prices
  ["errors", "util"], // leaves
];

const here = dirname(fileURLToPath(import.meta.url));
const srcFlag = process.argv.indexOf("--src");
const srcDir = srcFlag !== -1 && process.argv[srcFlag + 1] ? resolve(process.argv[srcFlag + 1]) : resolve(here, "..", "src");

function* tsFiles(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) yield* tsFiles(full);
    else if (entry.name.endsWith(".ts") && !entry.name.endsWith(".d.ts")) yield full;
  }
}

/** The top folder under src/ of a path inside it. */
function folderOf(file) {
  const parts = relative(srcDir, file).split(sep);
  return parts.length > 1 ? parts[0] : "(root)";
}

// `from "x"` (import and export), `import "x"`, `import("x")`. Comments that start a line are
// stripped first, so that an example in TSDoc is not an import (only those: a string such as
// "src/**/*.ts" must not open a "comment" that swallows real imports).
const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(?\s*)["']([^"']+)["']/g;

function importsOf(text) {
  const code = text.replace(/^\s*\/\*[\s\S]*?\*\//gm, "").replace(/^\s*\/\/.*$/gm, "");
  return [...code.matchAll(SPECIFIER)].map((m) => m[1]);
}

/** folder -> folder -> example "file -> specifier" lines. */
const edges = new Map();
for (const file of tsFiles(srcDir)) {
  const from = folderOf(file);
  for (const spec of importsOf(readFileSync(file, "utf8"))) {
    if (!spec.startsWith(".")) continue; // packages and node: builtins
    const to = folderOf(resolve(dirname(file), spec));
    if (to === from) continue;
    if (!edges.has(from)) edges.set(from, new Map());
    const byTarget = edges.get(from);
    if (!byTarget.has(to)) byTarget.set(to, []);
    byTarget.get(to).push(`${relative(srcDir, file)} -> ${spec}`);
  }
}

const rank = new Map();
LAYERS.forEach((row, i) => row.forEach((folder) => rank.set(folder, i)));
const folders = new Set([...edges.keys(), ...[...edges.values()].flatMap((m) => [...m.keys()])]);
for (const entry of readdirSync(srcDir, { withFileTypes: true })) if (entry.isDirectory()) folders.add(entry.name);

const problems = [];
for (const folder of [...folders].sort()) {
  if (!rank.has(folder)) problems.push(`src/${folder}/ is in no layer: add it to LAYERS in scripts/check-layers.mjs`);
}
for (const [from, byTarget] of edges) {
  for (const [to, where] of byTarget) {
    if (!rank.has(from) || !rank.has(to)) continue;
    if (rank.get(to) <= rank.get(from)) {
      const how = rank.get(to) === rank.get(from) ? "a folder of the same layer" : "a higher layer";
      problems.push(`${from} -> ${to}: imports ${how}\n${where.map((w) => `    ${w}`).join("\n")}`);
    }
  }
}

// Cycles, independently of LAYERS (Tarjan's strongly connected components).
const index = new Map();
const low = new Map();
const stack = [];
const onStack = new Set();
let next = 0;
const cycles = [];
function connect(v) {
  index.set(v, next);
  low.set(v, next);
  next += 1;
  stack.push(v);
  onStack.add(v);
  for (const w of edges.get(v)?.keys() ?? []) {
    if (!index.has(w)) {
      connect(w);
      low.set(v, Math.min(low.get(v), low.get(w)));
    } else if (onStack.has(w)) low.set(v, Math.min(low.get(v), index.get(w)));
  }
  if (low.get(v) === index.get(v)) {
    const component = [];
    let w;
    do {
      w = stack.pop();
      onStack.delete(w);
      component.push(w);
    } while (w !== v);
    if (component.length > 1) cycles.push(component.sort());
  }
}
for (const v of [...folders].sort()) if (!index.has(v)) connect(v);
for (const c of cycles) problems.push(`cycle between folders: ${c.join(" <-> ")}`);

if (process.argv.includes("--graph")) {
  for (const from of [...edges.keys()].sort()) {
    console.log(`${from} -> ${[...edges.get(from).keys()].sort().join(", ")}`);
  }
}
if (problems.length > 0) {
  console.error(`check-layers: ${problems.length} problem(s) in src/ (layers, top to bottom: ${LAYERS.map((r) => r.join("|")).join(" > ")})`);
  for (const p of problems) console.error(`- ${p}`);
  process.exit(1);
}
console.log(`check-layers: ${folders.size} folders, no cycles, every import reaches down (${LAYERS.map((r) => r.join("|")).join(" > ")})`);
