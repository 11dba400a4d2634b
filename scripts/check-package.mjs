#!/usr/bin/env node
// The package's shape as a user gets it, checked after the build (`npm test` runs it after tsup):
//   - publint --strict: package.json fields against the packed files (warnings fail too);
//   - attw --pack --profile esm-only: the types resolve for every entry under node16 (ESM) and
//     bundler resolution (the esm-only profile ignores CommonJS resolution: the package is ESM-only,
//     which Node >= 22 also loads with require(), decision 0019);
//   - typedoc --emit none with typedoc.json's treatWarningsAsErrors: 0 warnings (an exported type
//     that is not reachable, a broken {@link}), examples pages included.
// Both pack checks run `npm pack`, so they run one after the other; typedoc runs beside them.
// Usage: `node scripts/check-package.mjs` (dist/ must be built).
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const bin = (name) => join(root, "node_modules", ".bin", name);

/** Runs a command in the repository root; resolves with its exit code and output. */
function run(label, command, args) {
  return new Promise((done) => {
    const started = Date.now();
    const child = spawn(command, args, { cwd: root, env: { ...process.env, FORCE_COLOR: "0", NO_COLOR: "1" } });
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    child.on("error", (err) => done({ label, code: 1, output: `${output}${err.message}\n`, ms: Date.now() - started }));
    child.on("close", (code, signal) => done({ label, code: code ?? (signal ? 1 : 0), output, ms: Date.now() - started }));
  });
}

if (!existsSync(join(root, "dist", "index.js"))) {
  console.error("check:package: dist/ is not built; run tsup first.");
  process.exit(1);
}

const packChecks = (async () => [
  await run("publint --strict", bin("publint"), ["--strict"]),
  await run("attw --pack --profile esm-only", bin("attw"), ["--pack", ".", "--profile", "esm-only", "--format", "table-flipped"]),
])();
const docs = (async () => {
  const pages = await run("examples pages", process.execPath, [join(root, "scripts", "typedoc-examples.mjs")]);
  if (pages.code !== 0) return pages;
  return run("typedoc (0 warnings)", bin("typedoc"), ["--emit", "none", "--skipErrorChecking"]);
})();

const results = [...(await packChecks), await docs];
let failed = 0;
for (const result of results) {
  if (result.code === 0) {
    console.log(`check:package: ${result.label} ok (${(result.ms / 1000).toFixed(1)} s)`);
  } else {
    failed++;
    console.error(`check:package: ${result.label} FAILED (exit ${result.code})\n${result.output.trimEnd()}\n`);
  }
}
process.exit(failed === 0 ? 0 : 1);
