/** Inputs of {@link buildUserData}. */
export interface UserDataInput {
  /** The SSH host key cloud-init installs (OpenSSH private key and `ssh-ed25519 …` public key). */
  readonly hostKey?: { readonly privateKey: string; readonly publicKey: string };
}

/**
 * The instance's cloud-config: the SSH host key runctl chose (so the first connection is verified),
 * and the AWS CLI when the image lacks it (the agent uses it for S3; the Deep Learning AMIs have it).
 * Returned base64-encoded, as RunInstances wants it.
 *
 * @example
 * ```ts
 * const userData = buildUserData({ hostKey });
 * ```
 */
export function buildUserData(input: UserDataInput): string {
  const lines = ["#cloud-config"];
  if (input.hostKey) {
    lines.push("ssh_deletekeys: true", "ssh_genkeytypes: []", "ssh_keys:", "  ed25519_private: |");
    for (const l of input.hostKey.privateKey.trim().split("\n")) lines.push(`    ${l}`);
    lines.push(`  ed25519_public: ${input.hostKey.publicKey}`);
  }
  lines.push("runcmd:", `  - [sh, -c, "command -v aws >/dev/null || snap install aws-cli --classic || true"]`);
  return Buffer.from(lines.join("\n") + "\n", "utf8").toString("base64");
}

/** Reads the host public key back out of base64 user data (for tests and fakes). */
export function hostKeyOfUserData(userDataBase64: string): { readonly privateKey: string; readonly publicKey: string } | undefined {
  const text = Buffer.from(userDataBase64, "base64").toString("utf8");
  const pub = /^ {2}ed25519_public: (.+)$/m.exec(text)?.[1];
  const start = text.indexOf("  ed25519_private: |\n");
  if (!pub || start < 0) return undefined;
  const rest = text.slice(start).split("\n").slice(1);
  const body: string[] = [];
  for (const l of rest) {
    if (!l.startsWith("    ")) break;
    body.push(l.slice(4));
  }
  return { privateKey: body.join("\n") + "\n", publicKey: pub.trim() };
}
