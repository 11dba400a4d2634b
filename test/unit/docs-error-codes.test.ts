import { readFileSync } from "node:fs";
import { join } from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import { codeLikeMentions, prose, sourceWords } from "../support/doc-pages.js";

const root = join(import.meta.dirname, "..", "..");
const ERRORS_SOURCE = join(root, "src", "errors", "runctl-error.ts");
const TROUBLESHOOTING = join(root, "docs", "guides", "troubleshooting.md");

/**
 * The error codes declared in `src/errors/runctl-error.ts`: the string literals of the
 * `RunctlErrorCode` union, or of the `as const` array it is derived from (`(typeof CODES)[number]`).
 * Parsed from the source, so the test follows the declaration, never a copied list.
 */
function declaredErrorCodes(source: string): string[] {
  const file = ts.createSourceFile("runctl-error.ts", source, ts.ScriptTarget.Latest, true);
  const arrays = new Map<string, ts.Expression>();
  let alias: ts.TypeAliasDeclaration | undefined;
  const visit = (node: ts.Node): void => {
    if (ts.isTypeAliasDeclaration(node) && node.name.text === "RunctlErrorCode") alias = node;
    if (ts.isVariableDeclaration(node) && ts.isIdentifier(node.name) && node.initializer) arrays.set(node.name.text, node.initializer);
    ts.forEachChild(node, visit);
  };
  visit(file);
  if (!alias) throw new Error("no `type RunctlErrorCode` in src/errors/runctl-error.ts");
  const codes: string[] = [];
  const fromArray = (expr: ts.Expression): void => {
    let e = expr;
    while (ts.isAsExpression(e) || ts.isSatisfiesExpression(e) || ts.isParenthesizedExpression(e)) e = e.expression;
    if (!ts.isArrayLiteralExpression(e)) throw new Error("the array RunctlErrorCode is derived from is not an array literal");
    for (const el of e.elements) if (ts.isStringLiteral(el)) codes.push(el.text);
  };
  const fromType = (type: ts.TypeNode): void => {
    if (ts.isUnionTypeNode(type)) return type.types.forEach(fromType);
    if (ts.isParenthesizedTypeNode(type)) return fromType(type.type);
    if (ts.isLiteralTypeNode(type) && ts.isStringLiteral(type.literal)) return void codes.push(type.literal.text);
    // (typeof CODES)[number]
    if (ts.isIndexedAccessTypeNode(type)) {
      let object = type.objectType;
      while (ts.isParenthesizedTypeNode(object)) object = object.type;
      if (ts.isTypeQueryNode(object) && ts.isIdentifier(object.exprName)) {
        const init = arrays.get(object.exprName.text);
        if (init) return fromArray(init);
      }
    }
    throw new Error(`RunctlErrorCode has a part this test cannot read: ${type.getText(file)}`);
  };
  fromType(alias.type);
  return codes;
}

/** Codes with their own heading: "### `CODE`" (outside fenced blocks). */
function documentedErrorCodes(markdown: string): string[] {
  return [...prose(markdown).matchAll(/^#{2,4} `([A-Z][A-Z0-9_]*)`\s*$/gm)].map((m) => m[1]!);
}

/** What is wrong with a troubleshooting page, given the declared codes and the words that exist. */
function troubleshootingProblems(markdown: string, declared: readonly string[], exists: (word: string) => boolean): string[] {
  const documented = documentedErrorCodes(markdown);
  const problems: string[] = [];
  for (const code of declared) if (!documented.includes(code)) problems.push(`${code}: declared, but has no "### \`${code}\`" section`);
  for (const code of documented) if (!declared.includes(code)) problems.push(`${code}: has a section, but is not a declared RunctlErrorCode`);
  const seen = new Set<string>();
  for (const code of documented) {
    if (seen.has(code)) problems.push(`${code}: has two sections`);
    seen.add(code);
  }
  for (const word of codeLikeMentions(markdown)) {
    if (!declared.includes(word) && !exists(word)) problems.push(`${word}: mentioned, but no such code or name exists in src/`);
  }
  return problems;
}

describe("docs/guides/troubleshooting.md covers exactly the declared error codes", () => {
  const declared = declaredErrorCodes(readFileSync(ERRORS_SOURCE, "utf8"));
  const markdown = readFileSync(TROUBLESHOOTING, "utf8");
  const words = sourceWords([join(root, "src")]);

  it("reads the declared codes from src/errors", () => {
    expect(declared.length).toBeGreaterThan(10);
    for (const code of declared) expect(code).toMatch(/^[A-Z][A-Z_]+$/);
    expect(new Set(declared).size).toBe(declared.length);
  });

  it("has one section per declared code, none for an undeclared one, and mentions only codes that exist", () => {
    expect(troubleshootingProblems(markdown, declared, (w) => words.has(w))).toEqual([]);
  });

  it("would fail on a missing section, an unknown code and a made-up mention", () => {
    const doc = ["# T", "### `STORAGE_ERROR`", "text `STORAGE_ERROR`", "### `MADE_UP_CODE`", "see `NO_SUCH_WARNING` and `RECONNECTING`", "```", "`IN_A_BLOCK_IS_FINE`", "```"].join("\n");
    const problems = troubleshootingProblems(doc, ["STORAGE_ERROR", "NOT_FOUND"], (w) => w === "RECONNECTING");
    expect(problems).toEqual([
      'NOT_FOUND: declared, but has no "### `NOT_FOUND`" section',
      "MADE_UP_CODE: has a section, but is not a declared RunctlErrorCode",
      "MADE_UP_CODE: mentioned, but no such code or name exists in src/",
      "NO_SUCH_WARNING: mentioned, but no such code or name exists in src/",
    ]);
  });

  it("parses both a literal union and a union derived from an `as const` array", () => {
    expect(declaredErrorCodes('export type RunctlErrorCode =\n  | "A_B"\n  | "C_D";')).toEqual(["A_B", "C_D"]);
    expect(declaredErrorCodes('export const CODES = ["A_B", "C_D"] as const;\nexport type RunctlErrorCode = (typeof CODES)[number];')).toEqual(["A_B", "C_D"]);
    expect(() => declaredErrorCodes("export type Other = string;")).toThrow(/no `type RunctlErrorCode`/);
    expect(() => declaredErrorCodes("export type RunctlErrorCode = string;")).toThrow(/cannot read/);
  });
});
