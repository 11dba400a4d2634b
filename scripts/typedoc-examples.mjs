#!/usr/bin/env node
// Writes one markdown page per examples/*.ts for the API site (typedoc.json "projectDocuments"):
// the file's leading doc comment as the text, then the whole file as code. The pages are generated
// (into .typedoc/examples/, git-ignored) so that a new example is on the site without a second copy
// to keep in step. Usage: `node scripts/typedoc-examples.mjs` (run by `npm run docs` and
// scripts/check-package.mjs before typedoc).
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const examples = join(root, "examples");
const out = join(root, ".typedoc", "examples");

/** The text of a file's leading `/** ... *\/` comment, stars stripped; "" when it has none. */
export function leadingComment(source) {
  const match = /^\s*\/\*\*([\s\S]*?)\*\//.exec(source);
  if (!match) return "";
  return match[1]
    .split("\n")
    .map((line) => line.replace(/^\s*\* ?/, ""))
    .join("\n")
    .trim();
}

/** The markdown page of one example. */
export function examplePage(name, source) {
  const about = leadingComment(source)
    // An indented command line in the comment is a shell block on the page.
    .replace(/^ {2}(npx .*)$/gm, "```sh\n$1\n```");
  // A fence longer than any backtick run in the file, so the code cannot close it early.
  const fence = "`".repeat(Math.max(3, ...[...source.matchAll(/`+/g)].map((m) => m[0].length + 1)));
  return [
    "---",
    `title: ${name}`,
    "group: Examples",
    "---",
    "",
    `# ${name}`,
    "",
    about,
    "",
    // Every example says how to run it; the library file ssh-env.ts is imported, not run.
    ...(about.includes("npx tsx") || name === "ssh-env.ts" ? [] : [`Run it from a checkout of the repository: \`npx tsx examples/${name}\`.`, ""]),
    `${fence}ts`,
    source.trimEnd(),
    fence,
    "",
  ].join("\n");
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const names = readdirSync(examples).filter((name) => name.endsWith(".ts")).sort();
  for (const name of names) {
    writeFileSync(join(out, name.replace(/\.ts$/, ".md")), examplePage(name, readFileSync(join(examples, name), "utf8")));
  }
  console.log(`typedoc-examples: ${names.length} pages in ${out}`);
}
