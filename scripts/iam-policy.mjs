#!/usr/bin/env node
// Writes docs/iam-policy.json, the least-privilege IAM policy of runctl's client, from the list of
// AWS calls in src/aws/iam-actions.ts (docs/guides/iam.md explains it).
//
//   node scripts/iam-policy.mjs                 regenerate docs/iam-policy.json
//   node scripts/iam-policy.mjs --check         exit 1 when docs/iam-policy.json is stale
//   node scripts/iam-policy.mjs --stdout [--bucket NAME]... [--role NAME] [--feature SID]...
//                                               print a policy narrowed to your buckets, role, features
//
// Needs Node >= 22.18 (it imports the TypeScript module directly; types are stripped).
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { AWS_FEATURES, iamPolicyJson } from "../src/aws/iam-actions.ts";

const here = dirname(fileURLToPath(import.meta.url));
const target = resolve(here, "..", "docs", "iam-policy.json");
const args = process.argv.slice(2);

/** Every value of a repeatable `--name value` flag. */
function values(name) {
  const out = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] !== name) continue;
    const v = args[i + 1];
    if (v === undefined || v.startsWith("--")) fail(`${name} needs a value`);
    out.push(v);
  }
  return out;
}

function fail(message) {
  process.stderr.write(`iam-policy: ${message}\n`);
  process.exit(2);
}

const known = new Set(["--check", "--stdout", "--bucket", "--role", "--feature"]);
for (let i = 0; i < args.length; i++) {
  if (!known.has(args[i])) fail(`unknown argument ${args[i]} (see the header of scripts/iam-policy.mjs)`);
  if (["--bucket", "--role", "--feature"].includes(args[i])) i++;
}
const features = values("--feature");
for (const f of features) if (!AWS_FEATURES.some((x) => x.sid === f)) fail(`unknown feature ${f}; one of ${AWS_FEATURES.map((x) => x.sid).join(", ")}`);
const roles = values("--role");
if (roles.length > 1) fail("--role may be given once");
const buckets = values("--bucket");

if (args.includes("--stdout")) {
  process.stdout.write(iamPolicyJson({ buckets, ...(roles[0] ? { role: roles[0] } : {}), ...(features.length ? { features } : {}) }));
} else {
  if (buckets.length || roles.length || features.length) fail("--bucket, --role and --feature only go with --stdout: docs/iam-policy.json keeps the placeholders");
  const text = iamPolicyJson();
  if (args.includes("--check")) {
    let current = "";
    try {
      current = readFileSync(target, "utf8");
    } catch {}
    if (current !== text) {
      process.stderr.write("iam-policy: docs/iam-policy.json is stale; run `node scripts/iam-policy.mjs`\n");
      process.exit(1);
    }
  } else {
    writeFileSync(target, text);
    process.stdout.write(`iam-policy: wrote ${target}\n`);
  }
}
