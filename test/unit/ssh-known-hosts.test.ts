import { createHmac, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { checkHostKey, hostFieldMatches, hostKeyAlgorithmsFor, keyFingerprint, keyTypeOfBlob, knownHostsName, parseKnownHosts } from "../../src/transport/ssh/known-hosts.js";

function blob(type: string, body: Buffer = randomBytes(32)): Buffer {
  const t = Buffer.from(type);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(t.length);
  const blen = Buffer.alloc(4);
  blen.writeUInt32BE(body.length);
  return Buffer.concat([len, t, blen, body]);
}
const b64 = (b: Buffer): string => b.toString("base64");

describe("known_hosts", () => {
  const ed = blob("ssh-ed25519");
  const ed2 = blob("ssh-ed25519");
  const rsa = blob("ssh-rsa");

  it("parses plain, marked, commented and malformed lines", () => {
    const entries = parseKnownHosts(
      [`# comment`, ``, `10.0.0.5 ssh-ed25519 ${b64(ed)} me@laptop`, `@revoked * ssh-rsa ${b64(rsa)}`, `@cert-authority *.x ssh-ed25519 ${b64(ed2)}`, `garbage`, `h ssh-ed25519 !!!`].join("\n"),
    );
    expect(entries.map((e) => [e.marker, e.hosts, e.keyType, e.line])).toEqual([
      [undefined, "10.0.0.5", "ssh-ed25519", 3],
      ["@revoked", "*", "ssh-rsa", 4],
      ["@cert-authority", "*.x", "ssh-ed25519", 5],
    ]);
    expect(entries[0]!.key.equals(ed)).toBe(true);
  });

  it("names hosts as OpenSSH does", () => {
    expect(knownHostsName("h", 22)).toBe("h");
    expect(knownHostsName("h", 2222)).toBe("[h]:2222");
  });

  it("matches lists, wildcards, negations and hashed names", () => {
    expect(hostFieldMatches("a,b,c", "b")).toBe(true);
    expect(hostFieldMatches("*.example.com,!bad.example.com", "gpu.example.com")).toBe(true);
    expect(hostFieldMatches("*.example.com,!bad.example.com", "bad.example.com")).toBe(false);
    expect(hostFieldMatches("10.0.0.?", "10.0.0.7")).toBe(true);
    expect(hostFieldMatches("10.0.0.?", "10.0.0.17")).toBe(false);
    expect(hostFieldMatches("GPU1", "gpu1")).toBe(true);
    expect(hostFieldMatches("a.b", "axb")).toBe(false); // dots are literal
    const salt = randomBytes(20);
    const hash = createHmac("sha1", salt).update("[10.0.0.5]:2222").digest();
    const field = `|1|${b64(salt)}|${b64(hash)}`;
    expect(hostFieldMatches(field, "[10.0.0.5]:2222")).toBe(true);
    expect(hostFieldMatches(field, "10.0.0.5")).toBe(false);
  });

  it("tells match, mismatch, unknown and revoked apart", () => {
    const entries = parseKnownHosts(`10.0.0.5 ssh-ed25519 ${b64(ed)}\n[10.0.0.5]:2222 ssh-rsa ${b64(rsa)}\n@revoked * ssh-ed25519 ${b64(ed2)}\n`);
    expect(checkHostKey(entries, "10.0.0.5", 22, ed)).toEqual({ status: "match", line: 1 });
    expect(checkHostKey(entries, "10.0.0.5", 2222, rsa)).toEqual({ status: "match", line: 2 });
    expect(checkHostKey(entries, "10.0.0.5", 22, rsa)).toEqual({ status: "mismatch", knownTypes: ["ssh-ed25519"], lines: [1] });
    expect(checkHostKey(entries, "10.0.0.6", 22, ed)).toEqual({ status: "unknown" });
    expect(checkHostKey(entries, "10.0.0.5", 22, ed2)).toEqual({ status: "revoked", line: 3 });
  });

  it("offers the host key algorithms known_hosts holds", () => {
    const entries = parseKnownHosts(`h ssh-ed25519 ${b64(ed)}\nh ssh-rsa ${b64(rsa)}\n`);
    expect(hostKeyAlgorithmsFor(entries, "h", 22)).toEqual(["ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]);
    expect(hostKeyAlgorithmsFor(entries, "other", 22)).toBeUndefined();
  });

  it("reads key types and fingerprints", () => {
    expect(keyTypeOfBlob(ed)).toBe("ssh-ed25519");
    expect(keyTypeOfBlob(Buffer.alloc(2))).toBe("unknown");
    expect(keyFingerprint(ed)).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
  });
});
