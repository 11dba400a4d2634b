import { readFile, readdir } from "node:fs/promises";
import { homedir } from "node:os";
import { isAbsolute, join } from "node:path";
import { RunctlError } from "../../errors/runctl-error.js";
import { hostPatternsMatch, parseSshConfigText } from "./ssh-config-parse.js";

/**
 * What an OpenSSH client config says about one host: the subset runctl uses, raw (`%` tokens and `~`
 * not yet expanded; see `expandSshTokens`). Unset fields are undefined.
 *
 * @example
 * ```ts
 * const cfg: SshConfigHost = await readSshConfigHost("gpu", { path: "~/.ssh/config" });
 * cfg.hostName; // "10.0.0.5"
 * ```
 */
export interface SshConfigHost {
  /** `HostName` (may hold `%h`). */
  readonly hostName?: string | undefined;
  /** `User`. */
  readonly user?: string | undefined;
  /** `Port`. */
  readonly port?: number | undefined;
  /** Every `IdentityFile` that applies, in order (they accumulate, as in OpenSSH). */
  readonly identityFiles: readonly string[];
  /** `ProxyJump` (`none` kept as written). */
  readonly proxyJump?: string | undefined;
  /** `ProxyCommand`, which runctl does not run (a clear error is raised when it applies). */
  readonly proxyCommand?: string | undefined;
  /** `UserKnownHostsFile` (the files of the first line that applies). */
  readonly userKnownHostsFiles?: readonly string[] | undefined;
  /** `StrictHostKeyChecking`, read for messages only: runctl's host key rules stay in force. */
  readonly strictHostKeyChecking?: string | undefined;
}

/**
 * Options of {@link readSshConfigHost}.
 *
 * @example
 * ```ts
 * await readSshConfigHost("gpu", { path: "/tmp/test-ssh-config", home: "/tmp/home" });
 * ```
 */
export interface ReadSshConfigOptions {
  /** The config file; `~/` is expanded. A missing file is an empty config. */
  readonly path: string;
  /** Home folder for `~` and relative `Include` paths (`~/.ssh/...`). @defaultValue `os.homedir()` */
  readonly home?: string | undefined;
}

/** OpenSSH's limit on nested `Include`s; deeper means a loop. */
const MAX_INCLUDE_DEPTH = 16;

type Mutable = { -readonly [K in keyof SshConfigHost]: SshConfigHost[K] } & { identityFiles: string[] };

function expandTilde(path: string, home: string): string {
  return path === "~" ? home : path.startsWith("~/") ? join(home, path.slice(2)) : path;
}

const hasGlob = (s: string): boolean => /[*?[]/.test(s);

function globSegmentRegExp(segment: string): RegExp {
  const body = segment.replace(/[.+^${}()|\\]/g, "\\$&").replace(/\*/g, "[^/]*").replace(/\?/g, "[^/]");
  return new RegExp(`^${body}$`);
}

/** Expands `*`, `?` and `[...]` in an absolute path, segment by segment; sorted, as glob(3) returns them. */
async function expandGlob(pattern: string): Promise<string[]> {
  if (!hasGlob(pattern)) return [pattern];
  const segments = pattern.split("/").filter((s) => s !== "");
  let bases = ["/"];
  for (const segment of segments) {
    const next: string[] = [];
    for (const base of bases) {
      if (!hasGlob(segment)) {
        next.push(join(base, segment));
        continue;
      }
      const re = globSegmentRegExp(segment);
      let names: string[];
      try {
        names = await readdir(base);
      } catch {
        continue;
      }
      for (const name of names.sort()) if (!name.startsWith(".") || segment.startsWith(".")) if (re.test(name)) next.push(join(base, name));
    }
    bases = next;
  }
  return bases;
}

async function readConfigFile(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw new RunctlError("INVALID_ARGUMENT", `Cannot read the SSH config file ${path}: ${code ?? (cause as Error).message}.`, { cause, details: { path } });
  }
}

/**
 * Reads what an OpenSSH client config file says about `host`, with OpenSSH's rules for the subset runctl
 * uses: `Host` blocks with `*`/`?`/`!` patterns, the first value obtained for a keyword wins
 * (`IdentityFile` accumulates), `Include` (relative paths under `~/.ssh`, globs, nested at most 16 deep),
 * `Match` blocks skipped (nothing under a `Match` applies), unknown keywords ignored.
 *
 * Errors: INVALID_ARGUMENT (an unreadable file, a bad line, a bad `Port`, an `Include` loop).
 *
 * @param host - The host as the caller wrote it (an alias or a name).
 * @example
 * ```ts
 * const cfg = await readSshConfigHost("gpu", { path: "~/.ssh/config" });
 * ```
 */
export async function readSshConfigHost(host: string, options: ReadSshConfigOptions): Promise<SshConfigHost> {
  const home = options.home ?? homedir();
  const found: Mutable = { identityFiles: [] };
  const name = host.toLowerCase();

  const apply = (keyword: string, args: readonly string[], where: string): void => {
    const first = args[0]!;
    switch (keyword) {
      case "hostname":
        found.hostName ??= first;
        break;
      case "user":
        found.user ??= first;
        break;
      case "port": {
        if (found.port !== undefined) break;
        const port = Number(first);
        if (!/^\d+$/.test(first) || port < 1 || port > 65535) throw new RunctlError("INVALID_ARGUMENT", `SSH config ${where}: Port ${JSON.stringify(first)} is not a TCP port.`, { details: { where } });
        found.port = port;
        break;
      }
      case "identityfile":
        found.identityFiles.push(first);
        break;
      case "proxyjump":
        // ProxyJump and ProxyCommand exclude each other; the first one set wins, as in OpenSSH.
        if (found.proxyJump === undefined && found.proxyCommand === undefined) found.proxyJump = args.join(",");
        break;
      case "proxycommand":
        if (found.proxyJump === undefined && found.proxyCommand === undefined) found.proxyCommand = args.join(" ");
        break;
      case "userknownhostsfile":
        found.userKnownHostsFiles ??= [...args];
        break;
      case "stricthostkeychecking":
        found.strictHostKeyChecking ??= first;
        break;
      default:
        // Other keywords (Ciphers, ForwardAgent, ...) do not change what runctl does.
        break;
    }
  };

  const visit = async (path: string, depth: number, active: boolean, neverMatch: boolean): Promise<void> => {
    if (depth > MAX_INCLUDE_DEPTH) {
      throw new RunctlError("INVALID_ARGUMENT", `SSH config: Include nested more than ${MAX_INCLUDE_DEPTH} deep at ${path} (an Include loop?).`, { details: { path } });
    }
    const text = await readConfigFile(path);
    if (text === undefined) return;
    let on = active;
    for (const d of parseSshConfigText(text, path)) {
      const where = `${path}:${d.line}`;
      if (d.keyword === "host") {
        on = !neverMatch && hostPatternsMatch(d.args, name);
      } else if (d.keyword === "match") {
        // Match criteria (exec, canonical, localnetwork...) are not evaluated: its block never applies.
        on = false;
      } else if (d.keyword === "include") {
        for (const arg of d.args) {
          const expanded = expandTilde(arg, home);
          const abs = isAbsolute(expanded) ? expanded : join(home, ".ssh", expanded);
          for (const file of await expandGlob(abs)) await visit(file, depth + 1, on, neverMatch || !on);
        }
      } else if (on) {
        apply(d.keyword, d.args, where);
      }
    }
  };

  await visit(expandTilde(options.path, home), 0, true, false);
  return found;
}
