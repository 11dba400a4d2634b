import { homedir, userInfo } from "node:os";
import { RunctlError } from "../../errors/runctl-error.js";
import { readSshConfigHost, type SshConfigHost } from "./ssh-config.js";
import { expandSshTokens } from "./ssh-config-parse.js";
import { SSH_TRANSPORT_DEFAULTS, type SshJumpHost, type SshTransportOptions } from "./ssh-transport-options.js";

/**
 * One hop of a connection (a jump host or the target), with the SSH config applied and every path
 * expanded. @internal
 */
export interface ResolvedHop {
  /** How the caller named the host, for messages: `gpu`, or `gpu (10.0.0.5:2222)` when an alias maps elsewhere. */
  readonly label: string;
  /** The name or address connected to and looked up in known_hosts. */
  readonly host: string;
  readonly port: number;
  readonly username: string;
  readonly privateKey?: string | Uint8Array | undefined;
  readonly privateKeyPath?: string | undefined;
  readonly passphrase?: string | undefined;
  /** `IdentityFile`s of the config (expanded), tried when no key is given in code. */
  readonly identityFiles: readonly string[];
  /** known_hosts file, `~` expanded. */
  readonly knownHostsPath: string;
}

/** The hops of a connection: jump hosts first to last, then the target. @internal */
export interface SshRoute {
  readonly jumps: readonly ResolvedHop[];
  readonly target: ResolvedHop;
}

const EMPTY: SshConfigHost = { identityFiles: [] };

/** Parses one `ProxyJump` element: `[ssh://][user@]host[:port]`, `[v6addr]` in brackets. */
export function parseJumpSpec(spec: string): SshJumpHost {
  const m = /^(?:ssh:\/\/)?(?:([^@\s/]+)@)?(\[[^\]]+\]|[^:@\s/[\]]+)(?::(\d+))?\/?$/.exec(spec.trim());
  const port = m?.[3] === undefined ? undefined : Number(m[3]);
  if (!m?.[2] || (port !== undefined && (port < 1 || port > 65535))) {
    throw new RunctlError("INVALID_ARGUMENT", `proxyJump: ${JSON.stringify(spec)} is not "[user@]host[:port]".`, { details: { proxyJump: spec } });
  }
  return { host: m[2].replace(/^\[|\]$/g, ""), ...(m[1] ? { username: m[1] } : {}), ...(port !== undefined ? { port } : {}) };
}

/** The jump list of a `ProxyJump` value or option; empty for `none`. */
export function jumpList(value: string | readonly (SshJumpHost | string)[]): SshJumpHost[] {
  if (typeof value === "string") {
    if (value.trim().toLowerCase() === "none") return [];
    return value.split(",").map((s) => parseJumpSpec(s));
  }
  return value.map((v) => (typeof v === "string" ? parseJumpSpec(v) : v));
}

async function configFor(host: string, options: SshTransportOptions): Promise<SshConfigHost> {
  const path = options.sshConfig ?? SSH_TRANSPORT_DEFAULTS.sshConfig;
  return path === false ? EMPTY : readSshConfigHost(host, { path });
}

function resolveHop(given: SshJumpHost, cfg: SshConfigHost, knownHostsPath: string | undefined): ResolvedHop {
  const home = homedir();
  const localUser = userInfo().username;
  const alias = given.host;
  const host = cfg.hostName === undefined ? alias : expandSshTokens(cfg.hostName, { h: alias, n: alias });
  const port = given.port ?? cfg.port ?? SSH_TRANSPORT_DEFAULTS.port;
  const username = given.username ?? cfg.user ?? localUser;
  const tokens = { h: host, n: alias, p: String(port), r: username, u: localUser, d: home };
  const known = given.knownHostsPath ?? knownHostsPath ?? (cfg.userKnownHostsFiles?.[0] !== undefined ? expandSshTokens(cfg.userKnownHostsFiles[0], tokens) : SSH_TRANSPORT_DEFAULTS.knownHostsPath);
  const where = port === 22 ? host : `${host}:${port}`;
  return {
    label: host === alias ? where : `${alias} (${where})`,
    host,
    port,
    username,
    ...(given.privateKey !== undefined ? { privateKey: given.privateKey } : {}),
    ...(given.privateKeyPath !== undefined ? { privateKeyPath: given.privateKeyPath } : {}),
    ...(given.passphrase !== undefined ? { passphrase: given.passphrase } : {}),
    identityFiles: cfg.identityFiles.map((f) => expandSshTokens(f, tokens)),
    knownHostsPath: known === "~" || known.startsWith("~/") ? home + known.slice(1) : known,
  };
}

/**
 * Applies the SSH config file to a transport's options: the target's `HostName`, `User`, `Port`,
 * `IdentityFile`s and `UserKnownHostsFile`, and its jump hosts (`proxyJump` in code, else the config's
 * `ProxyJump`, each looked up in the config too). Options in code win over the file.
 *
 * Errors: INVALID_ARGUMENT (an unreadable or malformed config, a bad jump spec, a `ProxyCommand`).
 * @internal
 */
export async function resolveSshRoute(options: SshTransportOptions): Promise<SshRoute> {
  const cfg = await configFor(options.host, options);
  const target = resolveHop(options, cfg, options.knownHostsPath);
  const jumpValue = options.proxyJump ?? cfg.proxyJump;
  if (jumpValue === undefined && cfg.proxyCommand !== undefined && cfg.proxyCommand.trim().toLowerCase() !== "none") {
    throw new RunctlError(
      "INVALID_ARGUMENT",
      `The SSH config gives ${options.host} a ProxyCommand, which runctl does not run; use ProxyJump (or the proxyJump option) instead, or proxyJump: "none" to connect directly.`,
      { details: { host: options.host } },
    );
  }
  const jumps: ResolvedHop[] = [];
  for (const jump of jumpValue === undefined ? [] : jumpList(jumpValue)) {
    if (typeof jump !== "object" || jump === null || typeof jump.host !== "string" || jump.host === "") {
      throw new RunctlError("INVALID_ARGUMENT", `proxyJump: each jump host needs a \`host\`.`);
    }
    // A jump host's own ProxyJump is not followed: the chain is exactly what the target names.
    jumps.push(resolveHop(jump, await configFor(jump.host, options), options.knownHostsPath));
  }
  return { jumps, target };
}
