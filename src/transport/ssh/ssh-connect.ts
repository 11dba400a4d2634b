import { existsSync } from "node:fs";
import { Socket } from "node:net";
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import type ssh2Module from "ssh2";
import type { AgentAuthMethod, Client, ClientChannel, ConnectConfig, PublicKeyAuthMethod, ServerHostKeyAlgorithm } from "ssh2";
import { RunctlError, abortError } from "../../errors/runctl-error.js";
import { lazyRequire } from "../../util/lazy-require.js";
import { checkHostKey, hostKeyAlgorithmsFor, keyFingerprint, keyTypeOfBlob, knownHostsName, parseKnownHosts, type KnownHostEntry } from "./known-hosts.js";
import { resolveSshRoute, type ResolvedHop, type SshRoute } from "./ssh-route.js";
import { SSH_TRANSPORT_DEFAULTS, type SshTransportOptions } from "./ssh-transport-options.js";

// Loaded on the first connection, not with `runctl` (it was about 40 ms of `import("runctl")`).
const loadSsh2 = lazyRequire<typeof ssh2Module>("ssh2");

/**
 * Expands a leading `~/` to the home folder.
 *
 * @example
 * ```ts
 * expandHome("~/.ssh/known_hosts"); // "/home/me/.ssh/known_hosts"
 * ```
 */
export function expandHome(path: string): string {
  return path === "~" ? homedir() : path.startsWith("~/") ? join(homedir(), path.slice(2)) : path;
}

/**
 * Human-readable name of a host for messages: `host`, or `host:port` when the port is not 22.
 *
 * @example
 * ```ts
 * displayHost({ host: "10.0.0.5", port: 2222 }); // "10.0.0.5:2222"
 * ```
 */
export function displayHost(options: Pick<SshTransportOptions, "host" | "port">): string {
  const port = options.port ?? SSH_TRANSPORT_DEFAULTS.port;
  return port === 22 ? options.host : `${options.host}:${port}`;
}

type Auth = Pick<ConnectConfig, "privateKey" | "passphrase" | "agent" | "authHandler">;

function parseOrFail(key: Buffer, passphrase: string | undefined, where: string, source: string): void {
  const parsed = loadSsh2().utils.parseKey(key, passphrase);
  if (parsed instanceof Error) {
    const encrypted = /encrypted|passphrase/i.test(parsed.message);
    throw new RunctlError(
      "AUTH_FAILED",
      encrypted
        ? `The SSH private key ${source}for ${where} is encrypted and the passphrase is missing or wrong.`
        : `The SSH private key ${source}for ${where} could not be read (unsupported or corrupt key format).`,
      { details: { host: where } },
    );
  }
}

async function resolveAuth(hop: ResolvedHop, agentOption: string | undefined, where: string): Promise<Auth> {
  let key: Buffer | undefined;
  const agent = agentOption ?? process.env["SSH_AUTH_SOCK"];
  if (hop.privateKey !== undefined) {
    key = typeof hop.privateKey === "string" ? Buffer.from(hop.privateKey) : Buffer.from(hop.privateKey);
  } else if (hop.privateKeyPath !== undefined) {
    const path = expandHome(hop.privateKeyPath);
    try {
      key = await readFile(path);
    } catch (cause) {
      throw new RunctlError("INVALID_ARGUMENT", `Cannot read the SSH private key file ${path} for ${where}: ${(cause as NodeJS.ErrnoException).code ?? "error"}.`, {
        cause,
        details: { host: where, privateKeyPath: path },
      });
    }
  } else if (hop.identityFiles.length > 0) {
    // The config's IdentityFiles, in order, then the agent: files that do not exist are skipped, as ssh does.
    const methods: Array<PublicKeyAuthMethod | AgentAuthMethod> = [];
    for (const path of hop.identityFiles) {
      if (!existsSync(path)) continue;
      let k: Buffer;
      try {
        k = await readFile(path);
      } catch (cause) {
        throw new RunctlError("INVALID_ARGUMENT", `Cannot read the SSH private key file ${path} (IdentityFile) for ${where}: ${(cause as NodeJS.ErrnoException).code ?? "error"}.`, {
          cause,
          details: { host: where, privateKeyPath: path },
        });
      }
      parseOrFail(k, hop.passphrase, where, `${path} (IdentityFile) `);
      methods.push({ type: "publickey", username: hop.username, key: k, ...(hop.passphrase === undefined ? {} : { passphrase: hop.passphrase }) });
    }
    if (agent !== undefined && agent !== "") methods.push({ type: "agent", username: hop.username, agent });
    if (methods.length > 0) return { authHandler: methods };
  }
  if (key === undefined) {
    if (agent !== undefined && agent !== "") return { agent };
    for (const name of ["id_ed25519", "id_ecdsa", "id_rsa"]) {
      const path = join(homedir(), ".ssh", name);
      if (existsSync(path)) {
        key = await readFile(path);
        break;
      }
    }
    if (key === undefined) {
      throw new RunctlError(
        "AUTH_FAILED",
        `No SSH credentials for ${where}: pass privateKey, privateKeyPath or agent, or start an ssh-agent (SSH_AUTH_SOCK), or create ~/.ssh/id_ed25519.`,
        { details: { host: where } },
      );
    }
  }
  parseOrFail(key, hop.passphrase, where, "");
  return hop.passphrase === undefined ? { privateKey: key } : { privateKey: key, passphrase: hop.passphrase };
}

async function readKnownHosts(path: string): Promise<KnownHostEntry[]> {
  try {
    return parseKnownHosts(await readFile(path, "utf8"));
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw new RunctlError("INVALID_ARGUMENT", `Cannot read known_hosts file ${path}: ${(cause as Error).message}`, { cause });
  }
}

/**
 * Options of {@link openSshConnection}.
 *
 * @example
 * ```ts
 * await openSshConnection(options, { signal: AbortSignal.timeout(30_000) });
 * ```
 */
export interface OpenConnectionOptions {
  /** Aborts the attempt (the half-open connection is destroyed). @defaultValue none */
  readonly signal?: AbortSignal | undefined;
}

/**
 * Opens one authenticated SSH connection (no retries), verifying the host key against known_hosts.
 * The host is looked up in the SSH config file first (see {@link SshTransportOptions.sshConfig}); with
 * jump hosts, each hop is connected through the previous one and verified the same way, and closing the
 * returned client closes them all. The returned client always has an 'error' listener attached.
 *
 * Errors: HOST_KEY_MISMATCH (unknown, changed or revoked host key; not retryable), AUTH_FAILED,
 * HOST_UNREACHABLE (refused, no route, timeout; retryable), ABORTED, INVALID_ARGUMENT. An error at a
 * jump host keeps its code and names the hop (`details.hop`, `details.jumpHost`).
 *
 * @example
 * ```ts
 * const client = await openSshConnection({ host: "10.0.0.5", username: "me", privateKeyPath: "~/.ssh/id_ed25519" });
 * client.end();
 * ```
 */
export async function openSshConnection(options: SshTransportOptions, open: OpenConnectionOptions = {}): Promise<Client> {
  if (open.signal?.aborted) throw abortError(open.signal);
  const route = await resolveSshRoute(options);
  const hops = [...route.jumps, route.target];
  const clients: Client[] = [];
  try {
    for (let i = 0; i < hops.length; i++) {
      const hop = hops[i]!;
      let sock: ClientChannel | undefined;
      try {
        sock = i === 0 ? undefined : await forwardThrough(clients[i - 1]!, hops[i - 1]!, hop, open.signal);
      } catch (err) {
        // The previous jump host could not reach this hop: that jump host is the one named.
        throw hopError(err, i - 1, route);
      }
      try {
        clients.push(await connectHop(hop, options, sock, open));
      } catch (err) {
        throw i < route.jumps.length ? hopError(err, i, route) : err;
      }
    }
  } catch (err) {
    for (const c of clients.reverse()) c.end();
    throw err;
  }
  const target = clients[clients.length - 1]!;
  if (clients.length > 1) target.once("close", () => clients.slice(0, -1).forEach((c) => c.end()));
  return target;
}

/** An error at jump host `i`: the same code and retryability, with the hop named. */
function hopError(err: unknown, i: number, route: SshRoute): unknown {
  if (!(err instanceof RunctlError) || err.code === "ABORTED") return err;
  const jump = route.jumps[i]!;
  return new RunctlError(err.code, `Jump host ${i + 1} of ${route.jumps.length} (${jump.label}) on the way to ${route.target.label} failed: ${err.message}`, {
    cause: err,
    retryable: err.retryable,
    details: { ...err.details, hop: i + 1, jumpHost: jump.label, target: route.target.label },
  });
}

/** A TCP stream to `next`, opened by the jump host `via` (a `direct-tcpip` channel, as `ssh -J` uses). */
async function forwardThrough(via: Client, viaHop: ResolvedHop, next: ResolvedHop, signal: AbortSignal | undefined): Promise<ClientChannel> {
  return await new Promise<ClientChannel>((resolve, reject) => {
    const onAbort = (): void => reject(abortError(signal!));
    signal?.addEventListener("abort", onAbort, { once: true });
    via.forwardOut("127.0.0.1", 0, next.host, next.port, (err, stream) => {
      signal?.removeEventListener("abort", onAbort);
      if (err) {
        reject(
          new RunctlError("HOST_UNREACHABLE", `The jump host ${viaHop.label} could not open a connection to ${next.label}: ${err.message}.`, {
            cause: err,
            retryable: true,
            details: { host: next.label, via: viaHop.label },
          }),
        );
      } else if (signal?.aborted) {
        stream.destroy();
      } else {
        resolve(stream);
      }
    });
  });
}

/** One hop: authenticates to `hop` over a fresh TCP connection or over `sock` (a jump host's channel). */
async function connectHop(hop: ResolvedHop, options: SshTransportOptions, sock: ClientChannel | undefined, open: OpenConnectionOptions): Promise<Client> {
  const where = hop.label;
  const port = hop.port;
  if (open.signal?.aborted) throw abortError(open.signal);
  const auth = await resolveAuth(hop, options.agent, where);
  const insecure = options.insecureSkipHostKeyCheck === true;
  const knownHostsPath = hop.knownHostsPath;
  const known = insecure ? [] : await readKnownHosts(knownHostsPath);
  if (insecure) {
    const message = `runctl: host key checking is OFF for ${where} (insecureSkipHostKeyCheck). Anyone on the network path can impersonate this host and read everything sent to it.`;
    if (options.onWarning) options.onWarning(message);
    else process.emitWarning(message, { code: "RUNCTL_INSECURE_HOST_KEY" });
  }

  let hostKeyError: RunctlError | undefined;
  const hostVerifier = (key: Buffer): boolean => {
    if (insecure) return true;
    const verdict = checkHostKey(known, hop.host, port, key);
    if (verdict.status === "match") return true;
    const fp = keyFingerprint(key);
    const type = keyTypeOfBlob(key);
    const name = knownHostsName(hop.host, port);
    // hostName/port are what the key is recorded under (an ssh-config alias resolved), for fixes.
    const details = { host: where, hostName: hop.host, port, knownHostsPath, presentedKeyType: type, presentedFingerprint: fp };
    if (verdict.status === "unknown") {
      hostKeyError = new RunctlError(
        "HOST_KEY_MISMATCH",
        `The host key of ${where} is not in ${knownHostsPath}, so its identity cannot be verified. It presented ${type} ${fp}. ` +
          `If that fingerprint is right (compare with \`ssh-keygen -lf /etc/ssh/ssh_host_${type.replace(/^ssh-/, "").replace(/-sha2-nistp\d+$/, "")}_key.pub\` on the host), add it with ` +
          `\`ssh-keyscan -p ${port} -t ${type} ${hop.host} >> ${knownHostsPath}\` (or connect once with ssh), or pass knownHostsPath; ` +
          `insecureSkipHostKeyCheck: true turns the check off (insecure).`,
        { details: { ...details, reason: "unknown" } },
      );
    } else if (verdict.status === "revoked") {
      hostKeyError = new RunctlError("HOST_KEY_MISMATCH", `The host key presented by ${where} (${type} ${fp}) is marked @revoked in ${knownHostsPath} (line ${verdict.line}).`, {
        details: { ...details, reason: "revoked" },
      });
    } else {
      hostKeyError = new RunctlError(
        "HOST_KEY_MISMATCH",
        `HOST KEY MISMATCH for ${where}: it presented ${type} ${fp}, which differs from the key recorded for ${name} in ${knownHostsPath} (line ${verdict.lines.join(", ")}). ` +
          `Someone may be intercepting the connection, or the host was reinstalled. If the change is expected, remove the old entry (\`ssh-keygen -R ${name} -f ${knownHostsPath}\`) and add the new key.`,
        { details: { ...details, reason: "changed", knownLines: verdict.lines } },
      );
    }
    return false;
  };

  const algorithms = insecure ? undefined : hostKeyAlgorithmsFor(known, hop.host, port);
  const config: ConnectConfig = {
    host: hop.host,
    port,
    username: hop.username,
    ...auth,
    ...(sock ? { sock } : {}),
    hostVerifier,
    keepaliveInterval: options.keepaliveIntervalMs ?? SSH_TRANSPORT_DEFAULTS.keepaliveIntervalMs,
    keepaliveCountMax: options.keepaliveCountMax ?? SSH_TRANSPORT_DEFAULTS.keepaliveCountMax,
    readyTimeout: options.readyTimeoutMs ?? SSH_TRANSPORT_DEFAULTS.readyTimeoutMs,
    ...(algorithms ? { algorithms: { serverHostKey: algorithms as ServerHostKeyAlgorithm[] } } : {}),
  };

  const client = new (loadSsh2().Client)();
  // Each running command and transfer listens for 'close'; more than 10 at once is normal.
  client.setMaxListeners(0);
  return await new Promise<Client>((resolve, reject) => {
    let settled = false;
    const finish = (err: RunctlError | undefined): void => {
      if (settled) return;
      settled = true;
      open.signal?.removeEventListener("abort", onAbort);
      client.removeListener("ready", onReady);
      client.removeListener("close", onClose);
      if (err) {
        client.destroy();
        reject(err);
      } else {
        resolve(client);
      }
    };
    const onReady = (): void => finish(undefined);
    const onClose = (): void =>
      finish(hostKeyError ?? new RunctlError("HOST_UNREACHABLE", `The connection to ${where} closed during the SSH handshake.`, { retryable: true, details: { host: where } }));
    const onAbort = (): void => finish(abortError(open.signal!));
    // The 'error' listener stays for the client's whole life: ssh2 emits keepalive timeouts and resets
    // as 'error' events, and an unlistened one would crash the process.
    client.on("error", (err: Error & { level?: string | undefined; code?: string | undefined }) => {
      if (!settled) finish(hostKeyError ?? classifyConnectError(err, where));
    });
    client.once("ready", onReady);
    client.once("close", onClose);
    open.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      client.connect(config);
      // Without TCP_NODELAY, Nagle holds each small SSH message (a channel open, then its exec request)
      // until the previous one is acknowledged, and the server delays that ACK: ~40 ms per command.
      client.setNoDelay(true);
      coalesceWritesPerTick((client as unknown as { _sock?: unknown })._sock);
    } catch (cause) {
      finish(new RunctlError("INVALID_ARGUMENT", `Invalid SSH settings for ${where}: ${(cause as Error).message}`, { cause, details: { host: where } }));
    }
  });
}

/**
 * Joins the socket writes made in one synchronous run into one `writev` (a cork until the next
 * tick). ssh2 writes each packet as three buffers (length, ciphertext, tag) when its native binding
 * is missing, and a 64 KiB channel write is two packets: without this, streaming stdin costs a
 * system call and, with TCP_NODELAY, a TCP segment per buffer, on both ends.
 */
function coalesceWritesPerTick(sock: unknown): void {
  if (!(sock instanceof Socket)) return; // a jump host's channel: its own connection does this
  const write = sock.write.bind(sock) as (...args: unknown[]) => boolean;
  let corked = false;
  const uncork = (): void => {
    corked = false;
    sock.uncork();
  };
  sock.write = ((...args: unknown[]): boolean => {
    if (!corked) {
      corked = true;
      sock.cork();
      process.nextTick(uncork);
    }
    return write(...args);
  }) as typeof sock.write;
}

/**
 * Maps an ssh2 connection error to a RunctlError: AUTH_FAILED, HOST_UNREACHABLE (retryable) or
 * TRANSPORT_ERROR (retryable).
 *
 * @example
 * ```ts
 * client.on("error", (e) => reject(classifyConnectError(e, "10.0.0.5")));
 * ```
 */
export function classifyConnectError(err: Error & { level?: string | undefined; code?: string | undefined }, where: string): RunctlError {
  const details = { host: where, level: err.level, errno: err.code };
  switch (err.level) {
    case "client-authentication":
      return new RunctlError("AUTH_FAILED", `SSH authentication to ${where} failed: the server accepted none of the offered credentials (${err.message}).`, {
        cause: err,
        details,
      });
    case "agent":
      return new RunctlError("AUTH_FAILED", `The ssh-agent could not be used for ${where}: ${err.message}`, { cause: err, details });
    case "client-dns":
      return new RunctlError("HOST_UNREACHABLE", `Cannot resolve the SSH host name ${where}: ${err.message}`, { cause: err, details });
    case "client-socket":
    case "client-timeout":
      return new RunctlError("HOST_UNREACHABLE", `Cannot reach ${where} over SSH: ${err.code ?? err.message}.`, { cause: err, retryable: true, details });
    default:
      return new RunctlError("HOST_UNREACHABLE", `The SSH handshake with ${where} failed: ${err.message}`, { cause: err, retryable: true, details });
  }
}
