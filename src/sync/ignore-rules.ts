import type ignoreModule from "ignore";
import type { Ignore } from "ignore";
import { lazyRequire } from "../util/lazy-require.js";

// Loaded by the first scan, not with `runctl`.
const loadIgnore = lazyRequire<typeof ignoreModule>("ignore");
const newMatcher = (): Ignore => loadIgnore()({ ignorecase: false });

/**
 * Excluded from every sync unless a later rule re-includes them with `!`.
 *
 * @defaultValue `[".git", "node_modules", "__pycache__", ".venv", "*.pyc", ".DS_Store"]`
 * @example
 * ```ts
 * DEFAULT_EXCLUDES.includes("node_modules"); // true
 * ```
 */
export const DEFAULT_EXCLUDES: readonly string[] = Object.freeze([".git", "node_modules", "__pycache__", ".venv", "*.pyc", ".DS_Store"]);

/**
 * Names of the per-folder ignore files that {@link IgnoreRules.withIgnoreFiles} reads.
 *
 * @defaultValue `{ git: ".gitignore", runctl: ".runctlignore" }`
 * @example
 * ```ts
 * path.join(dir, IGNORE_FILE_NAMES.runctl); // ".../.runctlignore"
 * ```
 */
export const IGNORE_FILE_NAMES = Object.freeze({ git: ".gitignore", runctl: ".runctlignore" } as const);

/**
 * Options of {@link IgnoreRules.create}.
 *
 * @defaultValue `{}`: defaults on, no extra excludes, no ignore list
 * @example
 * ```ts
 * const options: IgnoreRulesOptions = { extraExcludes: ["/checkpoints/"], ignore: ["data/", "!data/labels.csv"] };
 * ```
 */
export interface IgnoreRulesOptions {
  /**
   * Extra excludes added to {@link DEFAULT_EXCLUDES} (gitignore syntax, relative to the root), e.g. the
   * checkpoint folder. Same precedence as the defaults (lowest).
   * @defaultValue `[]`
   */
  readonly extraExcludes?: readonly string[] | undefined;
  /**
   * The call's ignore list (gitignore syntax, relative to the root). Applied last, so it wins over every
   * ignore file; `!pattern` re-includes.
   * @defaultValue `[]`
   */
  readonly ignore?: readonly string[] | undefined;
  /**
   * Whether {@link DEFAULT_EXCLUDES} apply. `extraExcludes` apply either way.
   * @defaultValue true
   */
  readonly defaults?: boolean | undefined;
}

/**
 * Why a path is or is not ignored, from {@link IgnoreRules.explain}.
 *
 * @defaultValue `{ ignored: false }` when no rule matched
 * @example
 * ```ts
 * const v: IgnoreVerdict = rules.explain("build", true); // { ignored: true, pattern: "build/", source: ".gitignore" }
 * ```
 */
export interface IgnoreVerdict {
  /** Whether the path is excluded from the sync. */
  readonly ignored: boolean;
  /** The deciding pattern as written in its source (negations keep their `!`); absent when no rule matched. */
  readonly pattern?: string | undefined;
  /** Where the deciding pattern came from: `"defaults"`, `"ignore option"`, or the ignore file's relative path. */
  readonly source?: string | undefined;
}

interface Layer {
  /** Where the patterns came from (for {@link IgnoreVerdict.source}). */
  readonly source: string;
  /** Patterns already rewritten to be relative to the root. */
  readonly patterns: readonly { readonly pattern: string; readonly original: string }[];
}

/**
 * The exclude engine for a source tree: one set of rules for every transport (rust-lessons F11).
 *
 * Precedence, lowest first; within the combined list the last matching pattern wins, as in git:
 * 1. {@link DEFAULT_EXCLUDES} and `extraExcludes`;
 * 2. `.gitignore` files, from the root down (a deeper file wins over a shallower one). Patterns are
 *    relative to their own folder, exactly as git reads them;
 * 3. `.runctlignore` files, from the root down (same syntax), so they can re-include with `!` what a
 *    `.gitignore` excludes;
 * 4. the call's `ignore` list, relative to the root.
 *
 * Git semantics kept on purpose: an excluded directory is not descended into, so a `!negation` of a
 * file inside an excluded directory does not bring that file back (use `dir/*` + `!dir/keep` instead
 * of `dir/` + `!dir/keep`). Matching is case-sensitive on every OS (git's default on Linux), so a sync
 * is the same from macOS and Linux. Not read: `.git/info/exclude` and git's global excludes file,
 * because they live outside the tree and would make the sync differ between machines.
 *
 * Instances are immutable; {@link IgnoreRules.withIgnoreFiles} returns the rules for a subfolder.
 *
 * @example
 * ```ts
 * const root = IgnoreRules.create({ ignore: ["data/"] })
 *   .withIgnoreFiles("", { gitignore: "*.log\n!keep.log\n" });
 * root.ignores("run.log", false);   // true
 * root.ignores("keep.log", false);  // false
 * root.ignores("data", true);       // true
 * ```
 *
 * @defaultValue `IgnoreRules.create()`: the defaults only
 */
export class IgnoreRules {
  private matcher: Ignore | undefined;

  private constructor(
    private readonly base: readonly Layer[],
    private readonly gitLayers: readonly Layer[],
    private readonly runctlLayers: readonly Layer[],
    private readonly last: readonly Layer[],
  ) {}

  /**
   * The rules before any ignore file is read: defaults, `extraExcludes` and the call's list.
   *
   * @defaultValue options = `{}`
   * @example
   * ```ts
   * const rules = IgnoreRules.create({ extraExcludes: ["/checkpoints/"], ignore: ["*.ckpt"] });
   * ```
   */
  static create(options: IgnoreRulesOptions = {}): IgnoreRules {
    const base: Layer[] = [];
    if (options.defaults ?? true) base.push(layerFrom("defaults", "", DEFAULT_EXCLUDES));
    if (options.extraExcludes?.length) base.push(layerFrom("extraExcludes", "", options.extraExcludes));
    const last = options.ignore?.length ? [layerFrom("ignore option", "", options.ignore)] : [];
    return new IgnoreRules(base, [], [], last);
  }

  /**
   * The rules that apply inside folder `dir` (posix, relative to the root, `""` for the root), given the
   * contents of that folder's `.gitignore` and `.runctlignore`. Returns `this` when both are absent.
   *
   * @defaultValue files = `{}` (no ignore file in the folder)
   * @example
   * ```ts
   * const sub = rules.withIgnoreFiles("src/models", { gitignore: "*.bin\n" });
   * sub.ignores("src/models/w.bin", false); // true
   * ```
   */
  withIgnoreFiles(dir: string, files: { readonly gitignore?: string | undefined; readonly runctlignore?: string | undefined }): IgnoreRules {
    if (files.gitignore === undefined && files.runctlignore === undefined) return this;
    const prefix = dir === "" ? "" : `${dir}/`;
    const git = files.gitignore === undefined ? this.gitLayers : [...this.gitLayers, layerFrom(`${prefix}${IGNORE_FILE_NAMES.git}`, dir, splitLines(files.gitignore))];
    const runctl =
      files.runctlignore === undefined
        ? this.runctlLayers
        : [...this.runctlLayers, layerFrom(`${prefix}${IGNORE_FILE_NAMES.runctl}`, dir, splitLines(files.runctlignore))];
    return new IgnoreRules(this.base, git, runctl, this.last);
  }

  /**
   * Whether `path` (posix, relative to the root, no leading `./`) is excluded. Tests the path itself;
   * callers walking top-down never reach a path whose parent was excluded.
   *
   * @defaultValue isDirectory = false
   * @example
   * ```ts
   * rules.ignores("node_modules", true); // true
   * ```
   */
  ignores(path: string, isDirectory = false): boolean {
    return this.explain(path, isDirectory).ignored;
  }

  /**
   * Like {@link IgnoreRules.ignores}, and says which pattern from which source decided.
   *
   * @defaultValue isDirectory = false
   * @example
   * ```ts
   * rules.explain("a.pyc"); // { ignored: true, pattern: "*.pyc", source: "defaults" }
   * ```
   */
  explain(path: string, isDirectory = false): IgnoreVerdict {
    if (path === "" || path === ".") return { ignored: false };
    const result = this.getMatcher().test(isDirectory ? `${path}/` : path);
    if (result.ignored && result.rule) return { ignored: true, ...decode(result.rule.mark) };
    if (result.unignored) {
      // `ignore` does not report the negation that matched; find it for the message (cold path).
      const rule = this.findNegation(isDirectory ? `${path}/` : path);
      return rule ? { ignored: false, ...rule } : { ignored: false };
    }
    return { ignored: false };
  }

  private layers(): Layer[] {
    return [...this.base, ...this.gitLayers, ...this.runctlLayers, ...this.last];
  }

  private getMatcher(): Ignore {
    if (this.matcher === undefined) {
      const matcher = newMatcher();
      for (const layer of this.layers()) {
        matcher.add(layer.patterns.map((p) => ({ pattern: p.pattern, mark: encode(layer.source, p.original) })));
      }
      this.matcher = matcher;
    }
    return this.matcher;
  }

  private findNegation(testPath: string): { pattern: string; source: string } | undefined {
    const layers = this.layers();
    for (let i = layers.length - 1; i >= 0; i--) {
      const layer = layers[i] as Layer;
      for (let j = layer.patterns.length - 1; j >= 0; j--) {
        const p = layer.patterns[j] as Layer["patterns"][number];
        if (!p.pattern.startsWith("!")) continue;
        if (newMatcher().add(p.pattern.slice(1)).test(testPath).ignored) return { pattern: p.original, source: layer.source };
      }
    }
    return undefined;
  }
}

function splitLines(text: string): string[] {
  return text.split(/\r?\n/);
}

function layerFrom(source: string, dir: string, lines: readonly string[]): Layer {
  const patterns: { pattern: string; original: string }[] = [];
  for (const line of lines) {
    const pattern = rebasePattern(line, dir);
    if (pattern !== undefined) patterns.push({ pattern, original: line.trim() });
  }
  return { source, patterns };
}

/**
 * Rewrites one gitignore line from folder `dir` into an equivalent pattern relative to the root, so all
 * levels can live in one matcher with git's "last match wins". Returns undefined for blanks and comments.
 * Git: a pattern with a slash before its end is anchored to its folder; otherwise it matches at any depth
 * below that folder.
 */
function rebasePattern(rawLine: string, dir: string): string | undefined {
  const line = rawLine.endsWith("\r") ? rawLine.slice(0, -1) : rawLine;
  if (line.trim() === "" || line.startsWith("#")) return undefined;
  if (dir === "") return line;
  const negative = line.startsWith("!");
  const body = negative ? line.slice(1) : line;
  if (body === "" || body === "/") return undefined;
  const withoutTrailingSlash = body.endsWith("/") ? body.slice(0, -1) : body;
  const anchored = withoutTrailingSlash.includes("/");
  const rel = anchored ? body.replace(/^\/+/, "") : `**/${body}`;
  return `${negative ? "!" : ""}${escapeGlob(dir)}/${rel}`;
}

/** Escapes a literal folder path for use as a pattern prefix (glob characters and a leading `#`/`!`). */
function escapeGlob(dir: string): string {
  return dir.replace(/[\\*?[\]]/g, "\\$&").replace(/^([#!])/, "\\$1");
}

// Marks carry "source\u0000original pattern" through the `ignore` package to the verdict.
function encode(source: string, original: string): string {
  return `${source}\u0000${original}`;
}

function decode(mark: string | undefined): { pattern?: string | undefined; source?: string | undefined } {
  if (mark === undefined) return {};
  const at = mark.indexOf("\u0000");
  return { source: mark.slice(0, at), pattern: mark.slice(at + 1) };
}
