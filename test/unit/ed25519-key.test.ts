import { execFileSync } from "node:child_process";
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import ssh2 from "ssh2";
import { describe, expect, it } from "vitest";
import { encodeEd25519KeyPair, generateEd25519KeyPair } from "../../src/providers/ec2/ed25519-key.js";
import { makeRunKeys } from "../../src/providers/ec2/access-resources.js";
import { useTempRunctlHome, tempDir } from "../support/temp-home.js";

useTempRunctlHome("ed25519-key");

/** An ed25519 private key from a 32-byte seed (PKCS#8 DER: a fixed prefix, then the seed). */
function keyFromSeed(seed: Buffer): KeyObject {
  return createPrivateKey({ key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]), format: "der", type: "pkcs8" });
}

function rawPublic(key: KeyObject): Buffer {
  return Buffer.from(createPublicKey(key).export({ format: "jwk" }).x!, "base64url");
}

/** The first deterministic seed whose public key starts with a zero byte: the case ssh2's own generator gets wrong. */
function keyWithLeadingZero(): KeyObject {
  for (let i = 0; ; i++) {
    const key = keyFromSeed(createHash("sha256").update(`runctl-ed25519-${i}`).digest());
    if (rawPublic(key)[0] === 0) return key;
  }
}

/** What OpenSSH itself derives from the private key file: `ssh-keygen -y` reads and checks all of it. */
function opensshPublicOf(privateText: string): string {
  const dir = tempDir("ed25519");
  const path = join(dir, "id_ed25519");
  writeFileSync(path, privateText, { mode: 0o600 });
  return execFileSync("ssh-keygen", ["-y", "-f", path], { encoding: "utf8" }).trim();
}

describe("ed25519 keys in OpenSSH format", () => {
  it("writes a key whose public half starts with a zero byte so that OpenSSH and ssh2 read it, and signs with it", () => {
    const key = keyWithLeadingZero();
    const pair = encodeEd25519KeyPair(key, "runctl-host-r1");
    const blob = Buffer.from(pair.public.split(" ")[1]!, "base64");
    // string "ssh-ed25519" (4 + 11) then string key (4 + 32): all 32 bytes, the zero kept.
    expect(blob.length).toBe(51);
    expect(blob.subarray(19).equals(rawPublic(key))).toBe(true);
    expect(pair.public).toBe(`${pair.public.split(" ").slice(0, 2).join(" ")} runctl-host-r1`);
    expect(opensshPublicOf(pair.private)).toBe(pair.public);

    const parsed = ssh2.utils.parseKey(pair.private);
    if (parsed instanceof Error || Array.isArray(parsed)) throw parsed instanceof Error ? parsed : new Error("several keys");
    expect(parsed.type).toBe("ssh-ed25519");
    expect(parsed.comment).toBe("runctl-host-r1");
    expect(parsed.getPublicSSH().equals(blob)).toBe(true);
    const data = Buffer.from("challenge");
    expect(verify(null, data, createPublicKey(key), parsed.sign(data) as Buffer)).toBe(true);
    expect(verify(null, data, createPublicKey(key), sign(null, data, key))).toBe(true);
  });

  it("generates keys that every reader accepts, one after another", () => {
    for (let i = 0; i < 600; i++) {
      const pair = generateEd25519KeyPair(`runctl-r${i}`);
      const parsed = ssh2.utils.parseKey(pair.private);
      expect(parsed instanceof Error ? parsed.message : "parsed").toBe("parsed");
      expect(Buffer.from(pair.public.split(" ")[1]!, "base64").length).toBe(51);
    }
    const pair = generateEd25519KeyPair("runctl-last");
    expect(opensshPublicOf(pair.private)).toBe(pair.public);
  });

  it("gives a run its login key as a mode-600 file OpenSSH reads, and a host key pair", () => {
    const keys = makeRunKeys("r-keys");
    expect(opensshPublicOf(readFileSync(keys.login.privateKeyPath, "utf8")).split(" ").slice(0, 2).join(" ")).toBe(keys.login.publicKey);
    expect(execFileSync("stat", ["-c", "%a", keys.login.privateKeyPath], { encoding: "utf8" }).trim()).toBe("600");
    expect(opensshPublicOf(keys.host.privateKey).split(" ").slice(0, 2).join(" ")).toBe(keys.host.publicKey);
  });
});
