import { RunctlError } from "../../errors/runctl-error.js";

/**
 * One directive of an OpenSSH client config file: its keyword (lower case) and arguments.
 *
 * @example
 * ```ts
 * const [d] = parseSshConfigText("HostName=10.0.0.5", "config");
 * d?.keyword; // "hostname"
 * d?.args; // ["10.0.0.5"]
 * ```
 */
export interface SshConfigDirective {
  /** The keyword, lower-cased (keywords are case-insensitive). */
  readonly keyword: string;
  /** The arguments, quotes removed. */
  readonly args: readonly string[];
  /** 1-based line number, for messages. */
  readonly line: number;
}

/**
 * Splits the arguments of one line as OpenSSH's `argv_split` does: whitespace separates, double
 * quotes group (a `\"` inside is a quote), and an unquoted word starting with `#` ends the line.
 */
function splitArgs(rest: string, where: string): string[] {
  const args: string[] = [];
  let i = 0;
  while (i < rest.length) {
    while (i < rest.length && /\s/.test(rest[i]!)) i++;
    if (i >= rest.length) break;
    if (rest[i] === "#") break;
    let word = "";
    let quoted = false;
    while (i < rest.length && (quoted || !/\s/.test(rest[i]!))) {
      const c = rest[i]!;
      if (c === "\\" && (rest[i + 1] === '"' || rest[i + 1] === "\\")) {
        word += rest[i + 1];
        i += 2;
        continue;
      }
      if (c === '"') {
        quoted = !quoted;
        i++;
        continue;
      }
      word += c;
      i++;
    }
    if (quoted) throw new RunctlError("INVALID_ARGUMENT", `SSH config ${where}: unterminated quote.`, { details: { where } });
    args.push(word);
  }
  return args;
}

/**
 * Parses the text of an OpenSSH client config file (`~/.ssh/config`) into directives, without
 * interpreting them. Blank lines and comments are skipped; `Keyword value`, `Keyword=value` and
 * `Keyword = value` are all accepted; double-quoted values may hold spaces.
 *
 * Errors: INVALID_ARGUMENT (an unterminated quote, a keyword without a value), naming the file and line.
 *
 * @param text - The file's content.
 * @param file - The file's name, for messages.
 * @returns The directives in file order.
 *
 * @example
 * ```ts
 * parseSshConfigText('Host gpu\n  HostName 10.0.0.5\n  IdentityFile "~/my keys/id"\n', "config");
 * ```
 */
export function parseSshConfigText(text: string, file: string): SshConfigDirective[] {
  const out: SshConfigDirective[] = [];
  const lines = text.split(/\r?\n/);
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!.trim();
    if (line === "" || line.startsWith("#")) continue;
    const where = `${file}:${n + 1}`;
    // The keyword ends at whitespace or "="; one "=" (with blanks around it) may separate the value.
    const m = /^([^\s=]+)\s*(?:=\s*)?(.*)$/.exec(line);
    if (!m?.[1]) throw new RunctlError("INVALID_ARGUMENT", `SSH config ${where}: cannot read ${JSON.stringify(line)}.`, { details: { where } });
    const args = splitArgs(m[2] ?? "", where);
    if (args.length === 0) throw new RunctlError("INVALID_ARGUMENT", `SSH config ${where}: ${m[1]} has no value.`, { details: { where } });
    out.push({ keyword: m[1].toLowerCase(), args, line: n + 1 });
  }
  return out;
}

function patternToRegExp(pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${body}$`, "i");
}

/**
 * Whether the patterns of a `Host` line match a host name, as OpenSSH decides: `*` and `?` wildcards,
 * case-insensitive, and a matching `!pattern` excludes the host whatever else matches.
 *
 * @example
 * ```ts
 * hostPatternsMatch(["*.lan", "!bad.lan"], "gpu1.lan"); // true
 * hostPatternsMatch(["*.lan", "!bad.lan"], "bad.lan"); // false
 * ```
 */
export function hostPatternsMatch(patterns: readonly string[], host: string): boolean {
  let matched = false;
  for (const raw of patterns) {
    for (const pattern of raw.split(",")) {
      if (pattern === "") continue;
      const negated = pattern.startsWith("!");
      if (patternToRegExp(negated ? pattern.slice(1) : pattern).test(host)) {
        if (negated) return false;
        matched = true;
      }
    }
  }
  return matched;
}

/**
 * Values for the `%` tokens of `HostName`, `IdentityFile` and `UserKnownHostsFile`.
 *
 * @example
 * ```ts
 * const tokens: SshConfigTokens = { h: "10.0.0.5", n: "gpu", p: "22", r: "ml", u: "me", d: "/home/me" };
 * ```
 */
export interface SshConfigTokens {
  /** `%h`: the remote host name (after `HostName`). */
  readonly h: string;
  /** `%n`: the host name as given (the alias). */
  readonly n?: string | undefined;
  /** `%p`: the remote port. */
  readonly p?: string | undefined;
  /** `%r`: the remote user. */
  readonly r?: string | undefined;
  /** `%u`: the local user. */
  readonly u?: string | undefined;
  /** `%d`: the local home folder. */
  readonly d?: string | undefined;
}

/**
 * Expands `%%`, `%h`, `%n`, `%p`, `%r`, `%u` and `%d` in a config value, and a leading `~` to the local
 * home folder. An unknown or unavailable token is an INVALID_ARGUMENT error naming it.
 *
 * @example
 * ```ts
 * expandSshTokens("~/.ssh/%h_key", { h: "gpu1", d: "/home/me" }); // "/home/me/.ssh/gpu1_key"
 * ```
 */
export function expandSshTokens(value: string, tokens: SshConfigTokens): string {
  const home = tokens.d;
  let v = value;
  if (home !== undefined && (v === "~" || v.startsWith("~/"))) v = home + v.slice(1);
  return v.replace(/%(.)/g, (whole, t: string) => {
    if (t === "%") return "%";
    const got = (tokens as unknown as Readonly<Record<string, string | undefined>>)[t];
    if (got === undefined) throw new RunctlError("INVALID_ARGUMENT", `SSH config value ${JSON.stringify(value)}: the token ${whole} is not supported here.`);
    return got;
  });
}
