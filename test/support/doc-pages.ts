/**
 * Reading markdown pages for the docs tests (test/unit/docs-*.test.ts): fenced blocks, inline code
 * spans, links, heading anchors as GitHub makes them, and the words of the source tree, so a page can
 * be checked against the code it describes.
 */
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

/** What reads like a code or an environment variable: upper case words joined by `_`. */
export const CODE_LIKE = /^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$/;

/** One fenced code block: its info string (`ts`, `ts nocheck`, `sh`), its text and its first line. */
export interface FencedBlock {
  readonly info: string;
  readonly code: string;
  readonly line: number;
}

/** The fenced (```) blocks of a page, in order. */
export function fencedBlocks(markdown: string): FencedBlock[] {
  const blocks: FencedBlock[] = [];
  const lines = markdown.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(.*)$/.exec(lines[i]!);
    if (!open) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]!); i++) body.push(lines[i]!);
    blocks.push({ info: open[1]!.trim(), code: body.join("\n"), line: start + 1 });
  }
  return blocks;
}

/** The page without its fenced blocks (their lines blanked, so line numbers stay). */
export function prose(markdown: string): string {
  return markdown.replace(/^```[\s\S]*?^```[ \t]*$/gm, (block) => block.replace(/[^\n]/g, ""));
}

/** The text of every inline code span outside fenced blocks. */
export function inlineCode(markdown: string): string[] {
  return [...prose(markdown).matchAll(/`([^`\n]+)`/g)].map((m) => m[1]!);
}

/** Every code-like word (`STORAGE_ERROR`, `RUNCTL_RUN_ID`) inside inline code spans. */
export function codeLikeMentions(markdown: string): string[] {
  const found = new Set<string>();
  for (const span of inlineCode(markdown)) for (const word of span.match(/[A-Z][A-Z0-9_]*[A-Z0-9]/g) ?? []) if (CODE_LIKE.test(word)) found.add(word);
  return [...found];
}

/** Every camelCase identifier (`forwardCredentials`, `hostLostAfterMs`) inside inline code spans. */
export function camelCaseMentions(markdown: string): string[] {
  const found = new Set<string>();
  for (const span of inlineCode(markdown)) for (const word of span.match(/(?<![\w./-])[a-z][a-z0-9]*[A-Z][A-Za-z0-9]*\b/g) ?? []) found.add(word);
  return [...found];
}

/** A link of a page: its target as written and the line it is on. */
export interface PageLink {
  readonly target: string;
  readonly line: number;
}

/** The inline links `[text](target)` outside code (fenced blocks and code spans). */
export function links(markdown: string): PageLink[] {
  const out: PageLink[] = [];
  prose(markdown)
    .split("\n")
    .forEach((text, i) => {
      const withoutCode = text.replace(/`[^`]*`/g, "");
      for (const m of withoutCode.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) out.push({ target: m[1]!, line: i + 1 });
    });
  return out;
}

/** The anchors GitHub gives a page's headings (`## Spot and \`.recover()\`` -> `spot-and-recover`). */
export function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const counts = new Map<string, number>();
  for (const m of prose(markdown).matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const base = m[1]!
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, "")
      .trim()
      .replace(/\s/g, "-");
    const n = counts.get(base) ?? 0;
    counts.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

/** Every word of the source files below `dirs` (TypeScript, Python, scripts), to ask "does this name exist". */
export function sourceWords(dirs: readonly string[]): Set<string> {
  const words = new Set<string>();
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (/\.(ts|py|mjs)$/.test(entry.name)) for (const w of readFileSync(path, "utf8").match(/[A-Za-z_][A-Za-z0-9_]*/g) ?? []) words.add(w);
    }
  };
  for (const dir of dirs) walk(dir);
  return words;
}
