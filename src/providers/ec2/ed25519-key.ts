import { generateKeyPairSync, randomBytes, type KeyObject } from "node:crypto";

/** An ed25519 key pair in OpenSSH's formats. */
export interface OpenSshKeyPair {
  /** `-----BEGIN OPENSSH PRIVATE KEY-----` file text (unencrypted). */
  readonly private: string;
  /** `ssh-ed25519 BASE64 comment`. */
  readonly public: string;
}

/**
 * Makes an ed25519 key pair with node:crypto and writes it in OpenSSH's formats itself.
 *
 * Not `ssh2.utils.generateKeyPairSync`: ssh2 1.x drops a leading zero byte of the 32-byte public
 * key, so about one key in 256 comes out 31 bytes long and no SSH implementation reads it (an EC2
 * run failed at its first connection with "corrupt key format", after the instance was billed).
 */
export function generateEd25519KeyPair(comment: string): OpenSshKeyPair {
  return encodeEd25519KeyPair(generateKeyPairSync("ed25519").privateKey, comment);
}

/** Encodes an ed25519 private key (a node:crypto KeyObject) as OpenSSH private and public key text. */
export function encodeEd25519KeyPair(privateKey: KeyObject, comment: string): OpenSshKeyPair {
  const jwk = privateKey.export({ format: "jwk" });
  if (jwk.crv !== "Ed25519" || jwk.d === undefined || jwk.x === undefined) throw new TypeError("encodeEd25519KeyPair: not an ed25519 private key");
  const seed = Buffer.from(jwk.d, "base64url");
  const pub = Buffer.from(jwk.x, "base64url");
  const type = Buffer.from("ssh-ed25519");
  const publicBlob = Buffer.concat([sshString(type), sshString(pub)]);
  // The two equal check words let a reader tell a wrong passphrase from a corrupt file.
  const check = randomBytes(4);
  const section = Buffer.concat([check, check, sshString(type), sshString(pub), sshString(Buffer.concat([seed, pub])), sshString(Buffer.from(comment))]);
  // Padded 1, 2, 3, … to the cipher's block size, 8 for "none".
  const padding = Buffer.from(Array.from({ length: (8 - (section.length % 8)) % 8 }, (_, i) => i + 1));
  const none = sshString(Buffer.from("none"));
  const body = Buffer.concat([
    Buffer.from("openssh-key-v1\0"),
    none,
    none,
    sshString(Buffer.alloc(0)),
    uint32(1),
    sshString(publicBlob),
    sshString(Buffer.concat([section, padding])),
  ]);
  const lines = body.toString("base64").match(/.{1,70}/g) ?? [];
  return {
    private: `-----BEGIN OPENSSH PRIVATE KEY-----\n${lines.join("\n")}\n-----END OPENSSH PRIVATE KEY-----\n`,
    public: `ssh-ed25519 ${publicBlob.toString("base64")}${comment === "" ? "" : ` ${comment}`}`,
  };
}

function uint32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function sshString(bytes: Buffer): Buffer {
  return Buffer.concat([uint32(bytes.length), bytes]);
}
