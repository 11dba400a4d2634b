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
  /** Host name or address. */
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
  keepaliveIntervalMs: 1000,
  keepaliveCountMax: 3,
  readyTimeoutMs: 20_000,
  connectRetries: 3,
  maxSessions: 10,
} as const;
