import { createHash, createHmac, timingSafeEqual } from "node:crypto";

/**
 * One line of an OpenSSH known_hosts file.
 *
 * @example
 * ```ts
 * const [entry] = parseKnownHosts("10.0.0.5 ssh-ed25519 AAAAC3Nza...");
 * entry?.keyType; // "ssh-ed25519"
 * ```
 */
export interface KnownHostEntry {
  /** `@revoked` or `@cert-authority` when the line has a marker. @defaultValue undefined */
  readonly marker?: "@revoked" | "@cert-authority" | undefined;
  /** The host pattern field: comma-separated names/patterns, or one hashed `|1|salt|hash` name. */
  readonly hosts: string;
  /** Key type as written, e.g. `ssh-ed25519`. */
  readonly keyType: string;
  /** The public key blob (the base64 field, decoded). */
  readonly key: Buffer;
  /** 1-based line number, for messages. */
  readonly line: number;
}

/**
 * Parses the text of a known_hosts file. Comments, blank and malformed lines are skipped.
 *
 * @param text - The file's content.
 * @returns Entries in file order.
 *
 * @example
 * ```ts
 * const entries = parseKnownHosts(await readFile(path, "utf8"));
 * ```
 */
export function parseKnownHosts(text: string): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim();
    if (raw === "" || raw.startsWith("#")) continue;
    const fields = raw.split(/\s+/);
    let marker: KnownHostEntry["marker"];
    if (fields[0] === "@revoked" || fields[0] === "@cert-authority") {
      marker = fields[0];
      fields.shift();
    } else if (fields[0]?.startsWith("@")) {
      continue;
    }
    const [hosts, keyType, b64] = fields;
    if (hosts === undefined || keyType === undefined || b64 === undefined || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) continue;
    const key = Buffer.from(b64, "base64");
    if (key.length === 0) continue;
    entries.push(marker === undefined ? { hosts, keyType, key, line: i + 1 } : { marker, hosts, keyType, key, line: i + 1 });
  }
  return entries;
}

/**
 * The name OpenSSH looks up for a host: `host` on port 22, `[host]:port` otherwise.
 *
 * @example
 * ```ts
 * knownHostsName("10.0.0.5", 2222); // "[10.0.0.5]:2222"
 * ```
 */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function globToRegExp(pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${body}$`, "i");
}

function hashedMatches(field: string, name: string): boolean {
  const parts = field.split("|");
  // "|1|salt|hash" splits into ["", "1", salt, hash]
  if (parts.length !== 4 || parts[1] !== "1") return false;
  const salt = Buffer.from(parts[2]!, "base64");
  const want = Buffer.from(parts[3]!, "base64");
  const got = createHmac("sha1", salt).update(name).digest();
  return want.length === got.length && timingSafeEqual(want, got);
}

/**
 * Whether a known_hosts host field matches `name` (see {@link knownHostsName}): hashed names, comma
 * lists, `*`/`?` wildcards and `!` negations, as OpenSSH reads them.
 *
 * @example
 * ```ts
 * hostFieldMatches("*.example.com,!bad.example.com", "gpu1.example.com"); // true
 * ```
 */
export function hostFieldMatches(field: string, name: string): boolean {
  if (field.startsWith("|1|")) return hashedMatches(field, name);
  let matched = false;
  for (const pattern of field.split(",")) {
    if (pattern === "") continue;
    const negated = pattern.startsWith("!");
    const p = negated ? pattern.slice(1) : pattern;
    if (globToRegExp(p).test(name)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

/**
 * The type name inside a public key blob (its first SSH string), e.g. `ssh-ed25519`.
 *
 * @example
 * ```ts
 * keyTypeOfBlob(entry.key); // "ssh-ed25519"
 * ```
 */
export function keyTypeOfBlob(blob: Buffer): string {
  if (blob.length < 4) return "unknown";
  const len = blob.readUInt32BE(0);
  if (len > blob.length - 4 || len > 64) return "unknown";
  return blob.subarray(4, 4 + len).toString("latin1");
}

/**
 * OpenSSH's SHA256 fingerprint of a public key blob, e.g. `SHA256:n4b...` (no padding).
 *
 * @example
 * ```ts
 * keyFingerprint(blob); // "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"
 * ```
 */
export function keyFingerprint(blob: Buffer): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

/**
 * The outcome of {@link checkHostKey}.
 *
 * @example
 * ```ts
 * const v: HostKeyVerdict = checkHostKey(entries, "10.0.0.5", 22, blob);
 * if (v.status === "mismatch") console.error(v.lines);
 * ```
 */
export type HostKeyVerdict =
  | { readonly status: "match"; readonly line: number }
  | { readonly status: "mismatch"; readonly knownTypes: readonly string[]; readonly lines: readonly number[] }
  | { readonly status: "revoked"; readonly line: number }
  | { readonly status: "unknown" };

/**
 * Checks the key a server presented against known_hosts entries for `host:port`.
 *
 * - `match`: an entry for the host holds exactly this key.
 * - `revoked`: an `@revoked` line holds this key (for any host).
 * - `mismatch`: the host is known but with other keys.
 * - `unknown`: no entry names the host.
 *
 * @example
 * ```ts
 * const verdict = checkHostKey(parseKnownHosts(text), "10.0.0.5", 22, presentedBlob);
 * if (verdict.status !== "match") throw new Error(verdict.status);
 * ```
 */
export function checkHostKey(entries: readonly KnownHostEntry[], host: string, port: number, presented: Buffer): HostKeyVerdict {
  const name = knownHostsName(host, port);
  for (const e of entries) {
    if (e.marker === "@revoked" && e.key.equals(presented)) return { status: "revoked", line: e.line };
  }
  const forHost = entries.filter((e) => e.marker === undefined && hostFieldMatches(e.hosts, name));
  const hit = forHost.find((e) => e.key.equals(presented));
  if (hit) return { status: "match", line: hit.line };
  if (forHost.length === 0) return { status: "unknown" };
  return { status: "mismatch", knownTypes: [...new Set(forHost.map((e) => e.keyType))], lines: forHost.map((e) => e.line) };
}

const HOST_KEY_ALGORITHMS: Readonly<Record<string, readonly string[]>> = {
  "ssh-ed25519": ["ssh-ed25519"],
  "ecdsa-sha2-nistp256": ["ecdsa-sha2-nistp256"],
  "ecdsa-sha2-nistp384": ["ecdsa-sha2-nistp384"],
  "ecdsa-sha2-nistp521": ["ecdsa-sha2-nistp521"],
  "ssh-rsa": ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
};

/**
 * The host key algorithms to offer so the server presents a key type that known_hosts holds for it
 * (as OpenSSH does); undefined to keep the library's defaults (host unknown, or only unsupported types).
 *
 * @example
 * ```ts
 * hostKeyAlgorithmsFor(entries, "10.0.0.5", 22); // ["ssh-ed25519"]
 * ```
 */
export function hostKeyAlgorithmsFor(entries: readonly KnownHostEntry[], host: string, port: number): string[] | undefined {
  const name = knownHostsName(host, port);
  const algos: string[] = [];
  for (const e of entries) {
    if (e.marker !== undefined || !hostFieldMatches(e.hosts, name)) continue;
    for (const a of HOST_KEY_ALGORITHMS[keyTypeOfBlob(e.key)] ?? []) if (!algos.includes(a)) algos.push(a);
  }
  return algos.length > 0 ? algos : undefined;
}
