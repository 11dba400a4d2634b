import { readFileSync } from "node:fs";
import ssh2 from "ssh2";
import { RunctlError } from "../../errors/runctl-error.js";
import { expandHome } from "../../transport/ssh/ssh-connect.js";

/**
 * Reads and parses an SSH private key file given to `ec2()`, before anything is created: a key
 * that cannot be read is INVALID_ARGUMENT, one that is not a usable private key (corrupt, a public
 * key, encrypted: `ec2()` takes no passphrase) is AUTH_FAILED. Found after launch, either would
 * leave a billed instance waiting out the readiness timeout.
 *
 * @returns The path with `~/` expanded.
 * @example
 * ```ts
 * checkPrivateKeyFile("~/.ssh/ml-key.pem");
 * ```
 */
export function checkPrivateKeyFile(path: string): string {
  const expanded = expandHome(path);
  let key: Buffer;
  try {
    key = readFileSync(expanded);
  } catch (cause) {
    throw new RunctlError("INVALID_ARGUMENT", `ec2(): cannot read the SSH private key ${expanded} (access.privateKeyPath): ${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message}; nothing was created.`, {
      cause,
      details: { privateKeyPath: expanded },
    });
  }
  const parsed = ssh2.utils.parseKey(key);
  const first = Array.isArray(parsed) ? parsed[0] : parsed;
  if (parsed instanceof Error || first === undefined || first instanceof Error || !first.isPrivateKey()) {
    const message = parsed instanceof Error ? parsed.message : "not a private key";
    const encrypted = /encrypted|passphrase/i.test(message);
    throw new RunctlError(
      "AUTH_FAILED",
      `ec2(): the SSH private key ${expanded} (access.privateKeyPath) ${encrypted ? "is encrypted; ec2() needs a key without a passphrase" : `is not a usable private key (${message})`}; nothing was created.`,
      { details: { privateKeyPath: expanded } },
    );
  }
  return expanded;
}
