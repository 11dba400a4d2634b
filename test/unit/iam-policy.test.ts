import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { AWS_FEATURES, iamActionsOf, iamPolicy, iamPolicyJson } from "../../src/aws/iam-actions.js";

// Issue 16 item 4: the IAM policy is generated from the code's own list of AWS calls, and this
// test keeps that list true to src/ (a new command without a statement fails here).
const root = resolve(import.meta.dirname, "..", "..");
const src = join(root, "src");

function* tsFiles(dir: string): Generator<string> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) yield* tsFiles(full);
    else if (entry.name.endsWith(".ts") && !entry.name.endsWith(".d.ts")) yield full;
  }
}

/** What one file's source does with the AWS SDK: the calls it can make, and uses that cannot be mapped to IAM actions. */
function sdkUsesIn(text: string): { calls: string[]; unmappable: string[] } {
  const calls: string[] = [];
  const unmappable: string[] = [];
  // import { A, type B } from "@aws-sdk/pkg"; import X, { A } from ...; export { A } from ...
  const stmt = /\b(import|export)\s+(type\s+)?([^;]*?)\s+from\s*["']@aws-sdk\/([^"']+)["']/g;
  for (const m of text.matchAll(stmt)) {
    if (m[2]) continue; // `import type { ... }`: types only
    const pkg = m[4]!;
    const clause = m[3]!;
    if (/\*\s+as\s+/.test(clause)) unmappable.push(`namespace import of @aws-sdk/${pkg}`);
    const named = /\{([^}]*)\}/.exec(clause)?.[1] ?? "";
    const defaultName = clause.replace(/\{[^}]*\}/, "").replace(/,/g, "").trim();
    if (defaultName && !defaultName.includes("*")) unmappable.push(`default import ${defaultName} of @aws-sdk/${pkg}`);
    for (const raw of named.split(",")) {
      const spec = raw.trim();
      if (!spec || spec.startsWith("type ")) continue;
      const name = spec.split(/\s+as\s+/)[0]!.trim();
      if (/^[A-Z][A-Za-z0-9]*Client$/.test(name)) continue; // a client sends nothing by itself
      if (/^client-[a-z0-9-]+$/.test(pkg) && /Command$/.test(name)) calls.push(`${pkg}:${name.replace(/Command$/, "")}`);
      else unmappable.push(`${name} from @aws-sdk/${pkg}`);
    }
  }
  // import("@aws-sdk/...") at run time (a `typeof import(...)` type is fine).
  for (const m of text.matchAll(/(typeof\s+)?\bimport\(\s*["']@aws-sdk\/([^"']+)["']\s*\)/g)) if (!m[1]) unmappable.push(`dynamic import of @aws-sdk/${m[2]}`);
  return { calls, unmappable };
}

/** Every SDK call src/ can make, with the files that make it; and every use that cannot be mapped. */
function scanSource(): { calls: Map<string, string[]>; unmappable: string[] } {
  const calls = new Map<string, string[]>();
  const unmappable: string[] = [];
  for (const file of tsFiles(src)) {
    const uses = sdkUsesIn(readFileSync(file, "utf8"));
    const where = relative(src, file);
    for (const c of uses.calls) calls.set(c, [...(calls.get(c) ?? []), where]);
    unmappable.push(...uses.unmappable.map((u) => `${where}: ${u}`));
  }
  return { calls, unmappable };
}

/** The calls src/ makes that no feature lists. */
function missingFrom(scanned: Iterable<string>): string[] {
  const listed = new Set(AWS_FEATURES.flatMap((f) => f.calls));
  return [...scanned].filter((c) => !listed.has(c));
}

const actionsOf = (calls: readonly string[]): Set<string> => new Set(calls.flatMap((c) => iamActionsOf(c) ?? [`<unmapped ${c}>`]));

describe("the IAM policy covers exactly the AWS calls src/ makes", () => {
  const scan = scanSource();

  it("the scan sees the SDK: commands of every client, the multipart upload's included", () => {
    for (const c of ["client-ec2:RunInstances", "client-ssm:SendCommand", "client-s3:ListObjectsV2", "client-s3:UploadPart"]) expect(scan.calls.has(c), c).toBe(true);
    expect(scan.calls.size).toBeGreaterThanOrEqual(30);
  });

  it("every AWS SDK use in src/ maps to IAM actions (no namespace, default or dynamic imports, no presigner)", () => {
    expect(scan.unmappable).toEqual([]);
  });

  it("every SDK call src/ makes is listed in a feature of src/aws/iam-actions.ts", () => {
    const missing = missingFrom(scan.calls.keys()).map((c) => `${c} (used in ${scan.calls.get(c)!.join(", ")})`);
    expect(missing, "add these calls to a feature in src/aws/iam-actions.ts, with a statement, then run node scripts/iam-policy.mjs").toEqual([]);
  });

  it("no feature lists a call src/ no longer makes (least privilege)", () => {
    const stale = AWS_FEATURES.flatMap((f) => f.calls.filter((c) => !scan.calls.has(c)).map((c) => `${f.sid}: ${c}`));
    expect(stale).toEqual([]);
  });

  it("each feature's statements allow exactly the actions of its calls and the implied ones", () => {
    for (const f of AWS_FEATURES) {
      const needed = actionsOf(f.calls);
      for (const i of f.implied) needed.add(i.action);
      const granted = new Set(f.statements.flatMap((s) => s.Action));
      expect([...granted].sort(), f.sid).toEqual([...needed].sort());
    }
  });

  it("the check fails for a command the features do not list", () => {
    const uses = sdkUsesIn(`import { RebootInstancesCommand, type RunInstancesCommandInput, EC2Client } from "@aws-sdk/client-ec2";\nimport type { S3Client } from "@aws-sdk/client-s3";`);
    expect(uses).toEqual({ calls: ["client-ec2:RebootInstances"], unmappable: [] });
    expect(missingFrom(uses.calls)).toEqual(["client-ec2:RebootInstances"]);
    expect(sdkUsesIn(`import { getSignedUrl } from "@aws-sdk/s3-request-presigner";\nconst m = await import("@aws-sdk/client-s3");`).unmappable).toEqual([
      "getSignedUrl from @aws-sdk/s3-request-presigner",
      "dynamic import of @aws-sdk/client-s3",
    ]);
  });

  it("S3 calls map to the actions IAM checks", () => {
    expect(iamActionsOf("client-s3:ListObjectsV2")).toEqual(["s3:ListBucket"]);
    expect(iamActionsOf("client-s3:HeadObject")).toEqual(["s3:GetObject"]);
    expect(iamActionsOf("client-s3:DeleteObjects")).toEqual(["s3:DeleteObject"]);
    expect(iamActionsOf("client-s3:UploadPart")).toEqual(["s3:PutObject"]);
    expect(iamActionsOf("client-s3:CompleteMultipartUpload")).toEqual(["s3:PutObject"]);
    expect(iamActionsOf("client-s3:AbortMultipartUpload")).toEqual(["s3:AbortMultipartUpload"]);
    expect(iamActionsOf("client-ec2:RunInstances")).toEqual(["ec2:RunInstances"]);
    expect(iamActionsOf("client-sts:GetCallerIdentity")).toBeUndefined();
  });
});

describe("docs/iam-policy.json", () => {
  const file = join(root, "docs", "iam-policy.json");

  it("is what the generator writes (run `node scripts/iam-policy.mjs` after changing src/aws/iam-actions.ts)", () => {
    expect(readFileSync(file, "utf8")).toBe(iamPolicyJson());
  });

  it("the script's --check agrees, and its --stdout narrows to a bucket and a role", () => {
    expect(() => execFileSync(process.execPath, ["scripts/iam-policy.mjs", "--check"], { cwd: root, stdio: "pipe" })).not.toThrow();
    const narrowed = JSON.parse(execFileSync(process.execPath, ["scripts/iam-policy.mjs", "--stdout", "--bucket", "ckpt", "--role", "runctl-training", "--feature", "S3", "--feature", "Ec2Launch"], { cwd: root, encoding: "utf8" })) as ReturnType<typeof iamPolicy>;
    const resources = narrowed.Statement.flatMap((s) => s.Resource);
    expect(resources).toContain("arn:aws:s3:::ckpt/*");
    expect(resources).toContain("arn:aws:iam::*:role/runctl-training");
    expect(resources.some((r) => r.includes("YOUR-BUCKET") || r === "arn:aws:iam::*:role/*")).toBe(false);
    expect(new Set(narrowed.Statement.map((s) => s.Sid.replace(/^(Ec2Launch|S3).*$/, "$1")))).toEqual(new Set(["Ec2Launch", "S3"]));
  });

  it("fits a customer managed policy (6,144 characters without whitespace), with unique Sids per feature", () => {
    const policy = JSON.parse(readFileSync(file, "utf8")) as ReturnType<typeof iamPolicy>;
    expect(JSON.stringify(policy).length).toBeLessThanOrEqual(6144);
    const sids = policy.Statement.map((s) => s.Sid);
    expect(new Set(sids).size).toBe(sids.length);
    for (const s of policy.Statement) {
      expect(s.Sid).toMatch(/^[A-Za-z0-9]+$/);
      expect(AWS_FEATURES.some((f) => s.Sid.startsWith(f.sid))).toBe(true);
    }
  });

  it("scopes what it can: deletes, terminates and SSM commands only on runctl-tagged resources; PassRole only to EC2", () => {
    const policy = iamPolicy();
    const destructive = policy.Statement.filter((s) => s.Action.some((a) => /^ec2:(Terminate|Delete|Attach|Detach|AuthorizeSecurityGroupIngress)/.test(a)));
    expect(destructive.length).toBeGreaterThan(0);
    for (const s of destructive) expect(s.Condition?.["StringLike"]?.["aws:ResourceTag/runctl:run-id"], s.Sid).toBe("*");
    const passRole = policy.Statement.find((s) => s.Action.includes("iam:PassRole"))!;
    expect(passRole.Condition).toEqual({ StringEquals: { "iam:PassedToService": "ec2.amazonaws.com" } });
    const createTags = policy.Statement.filter((s) => s.Action.includes("ec2:CreateTags"));
    for (const s of createTags) expect(s.Condition?.["StringEquals"]?.["ec2:CreateAction"] ?? s.Condition?.["ForAllValues:StringEquals"]?.["aws:TagKeys"], s.Sid).toBeDefined();
  });
});
