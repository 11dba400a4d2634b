import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { shellJoin, shellQuote } from "../../src/transport/shell-quote.js";

const hostile: string[] = [
  "",
  " ",
  "plain",
  "two words",
  "it's",
  "'",
  "''",
  "\"double\"",
  "$HOME",
  "${HOME}",
  "$(id)",
  "`id`",
  "a;b",
  "a && b || c",
  "a|b",
  "new\nline",
  "\n",
  "tab\there",
  "*",
  "?",
  "[a-z]",
  "~",
  "~root",
  "-n",
  "--flag=value",
  "a\\b",
  "\\",
  "!",
  "!!",
  "#comment",
  "x=y",
  "<in",
  ">out",
  "2>&1",
  "{a,b}",
  "(sub)",
  "ünïcödé ✓ 😀",
  "\u0001\u007f",
  "'\"'\"'",
  "end\\",
];

function throughShell(shell: string, argv: readonly string[]): string[] {
  const out = execFileSync(shell, ["-c", `printf '%s\\0' ${shellJoin(argv)}`], { encoding: "utf8" });
  const parts = out.split("\0");
  parts.pop();
  return parts;
}

const shells = ["/bin/sh", "/bin/bash", "/bin/dash"].filter((s) => existsSync(s));

describe("shellQuote", () => {
  it("leaves safe words alone and quotes the rest", () => {
    expect(shellQuote("train.py")).toBe("train.py");
    expect(shellQuote("--lr=0.1")).toBe("--lr=0.1");
    expect(shellQuote("")).toBe("''");
    expect(shellQuote("a b")).toBe("'a b'");
    expect(shellQuote("it's")).toBe("'it'\\''s'");
  });

  it("rejects NUL bytes", () => {
    expect(() => shellQuote("a\0b")).toThrow(TypeError);
  });

  for (const shell of shells) {
    it(`round-trips every hostile argument through ${shell} -c`, () => {
      expect(throughShell(shell, hostile)).toEqual(hostile);
      for (const arg of hostile) expect(throughShell(shell, [arg])).toEqual([arg]);
    });
  }

  it("round-trips random strings", () => {
    let seed = 42;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const alphabet = " \t\n'\"\\$`;&|<>()[]{}*?!#~=%^,.:-_/aZ09é😀";
    const chars = [...alphabet];
    const args = Array.from({ length: 200 }, () => Array.from({ length: rand(12) }, () => chars[rand(chars.length)]!).join(""));
    expect(throughShell("/bin/sh", args)).toEqual(args);
  });

  it("shellJoin of an empty list is empty", () => {
    expect(shellJoin([])).toBe("");
  });
});
