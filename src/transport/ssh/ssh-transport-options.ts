import type { RunctlLogger } from "../../util/logger.js";

/**
 * Options of {@link sshTransport}. Credentials are read when connecting and never appear in errors,
 * events or logs.
 *
 * @example
 * ```ts
 * const options: SshTransportOptions = {
 *   host: "gpu1.example.com",
 *   username: "ubuntu",
 *   privateKeyPath: "~/.ssh/id_ed25519",
 * };
 * ```
 */
export interface SshTransportOptions {
  /**
   * Host name, address, or a `Host` alias of the SSH config file (see `sshConfig`): its `HostName`,
   * `User`, `Port`, `IdentityFile`, `ProxyJump` and `UserKnownHostsFile` apply unless set here.
   */
  readonly host: string;
  /** TCP port. @defaultValue 22 */
  readonly port?: number | undefined;
  /** Login user. @defaultValue the local user name (`os.userInfo().username`) */
  readonly username?: string | undefined;
  /**
   * Private key contents (OpenSSH or PEM). Takes precedence over `privateKeyPath` and `agent`.
   * @defaultValue none: `privateKeyPath`, then `agent`, then `$SSH_AUTH_SOCK`, then the first of
   * `~/.ssh/id_ed25519`, `~/.ssh/id_ecdsa`, `~/.ssh/id_rsa` that exists
   */
  readonly privateKey?: string | Uint8Array | undefined;
  /** Path of the private key file (`~/` is expanded). @defaultValue none */
  readonly privateKeyPath?: string | undefined;
  /** Passphrase of an encrypted private key. @defaultValue none */
  readonly passphrase?: string | undefined;
  /** Path of an ssh-agent socket. @defaultValue `process.env.SSH_AUTH_SOCK` when no key is given */
  readonly agent?: string | undefined;
  /** known_hosts file the host key is verified against (`~/` is expanded). @defaultValue `~/.ssh/known_hosts` */
  readonly knownHostsPath?: string | undefined;
  /**
   * Skip host key verification. Insecure (anyone on the path can impersonate the host); a warning is
   * reported through `onWarning` on every connection.
   * @defaultValue false
   */
  readonly insecureSkipHostKeyCheck?: boolean | undefined;
  /**
   * The OpenSSH client config file that `host` is looked up in (`~/` is expanded; a missing file is
   * an empty config), or `false` to read none. Options set here win over the file.
   * @defaultValue `"~/.ssh/config"`
   */
  readonly sshConfig?: string | false | undefined;
  /**
   * Jump hosts to connect through, first to last (like `ssh -J`): `"user@bastion:port,inner"` (each
   * name is looked up in `sshConfig` too), a list of {@link SshJumpHost}, or `"none"` to ignore a
   * `ProxyJump` of the config file. Every hop's host key is verified like the target's.
   * @defaultValue the config file's `ProxyJump`, else none
   */
  readonly proxyJump?: string | readonly (SshJumpHost | string)[] | undefined;
  /**
   * Debug output: connects, commands (argv, exit code, duration) and file transfers. Never
   * credentials, environment values or stdin. @defaultValue undefined (silent)
   */
  readonly logger?: RunctlLogger | undefined;
  /** Receives warnings (an insecure host key setting). @defaultValue `process.emitWarning` */
  readonly onWarning?: ((message: string) => void) | undefined;
  /** Interval of SSH keepalive probes; a dead or partitioned link is noticed after about interval × countMax. @defaultValue 1000 */
  readonly keepaliveIntervalMs?: number | undefined;
  /** Unanswered keepalives before the connection is declared dead. @defaultValue 3 */
  readonly keepaliveCountMax?: number | undefined;
  /** Time allowed for the TCP connection and SSH handshake. @defaultValue 20000 */
  readonly readyTimeoutMs?: number | undefined;
  /** Retries (with exponential backoff) of a connection attempt that failed for a retryable reason. @defaultValue 3 */
  readonly connectRetries?: number | undefined;
  /**
   * Most sessions (exec channels and SFTP) open at once on the connection; more wait for a free one.
   * OpenSSH servers allow 10 by default (`MaxSessions`).
   * @defaultValue 10
   */
  readonly maxSessions?: number | undefined;
}

/**
 * One jump host of {@link SshTransportOptions.proxyJump}. Settings not given come from the SSH config
 * file's entry for `host`, then from defaults; the target's `knownHostsPath`, `agent`,
 * `insecureSkipHostKeyCheck` and timeouts apply to every hop. A jump host's own `ProxyJump` is ignored.
 *
 * @example
 * ```ts
 * const bastion: SshJumpHost = { host: "bastion.example.com", username: "jump", privateKeyPath: "~/.ssh/bastion" };
 * ```
 */
export interface SshJumpHost {
  /** Host name, address or SSH config alias of the jump host. */
  readonly host: string;
  /** TCP port. @defaultValue the config file's `Port`, else 22 */
  readonly port?: number | undefined;
  /** Login user. @defaultValue the config file's `User`, else the local user name */
  readonly username?: string | undefined;
  /** Private key contents. @defaultValue none: `privateKeyPath`, then the config's `IdentityFile`s, then the agent and default keys */
  readonly privateKey?: string | Uint8Array | undefined;
  /** Path of the private key file (`~/` is expanded). @defaultValue none */
  readonly privateKeyPath?: string | undefined;
  /** Passphrase of an encrypted private key. @defaultValue none */
  readonly passphrase?: string | undefined;
  /** known_hosts file for this hop. @defaultValue the target's `knownHostsPath`, else the config's `UserKnownHostsFile`, else `~/.ssh/known_hosts` */
  readonly knownHostsPath?: string | undefined;
}

/**
 * Defaults of {@link SshTransportOptions}.
 *
 * @example
 * ```ts
 * const port = options.port ?? SSH_TRANSPORT_DEFAULTS.port; // 22
 * ```
 */
export const SSH_TRANSPORT_DEFAULTS = {
  port: 22,
  knownHostsPath: "~/.ssh/known_hosts",
  sshConfig: "~/.ssh/config",
  keepaliveIntervalMs: 1000,
  keepaliveCountMax: 3,
  readyTimeoutMs: 20_000,
  connectRetries: 3,
  maxSessions: 10,
} as const;
