/** Serializes the boot-time power-off and its cancel: whichever comes first, the other sees it. */
const POWER_OFF_LOCK = "/run/runctl-poweroff.lock";
/** Written by the cancel: a power-off not yet scheduled is then never scheduled. */
const POWER_OFF_CANCELED = "/run/runctl-poweroff.canceled";

/**
 * The command the agent runs once when it starts on an instance launched with a boot-time
 * power-off ({@link UserDataInput.powerOffAfterMin}): it cancels that power-off (`shutdown -c`),
 * or, should the agent be first, makes sure it is never scheduled. Succeeds when nothing was
 * scheduled.
 *
 * @example
 * ```ts
 * const shutdown = { command: ["sudo", "-n", "shutdown", "-h", "now"], afterRunMs: 1_800_000, cancelBootPowerOff: BOOT_POWER_OFF_CANCEL };
 * ```
 */
export const BOOT_POWER_OFF_CANCEL: readonly string[] = [
  "sudo",
  "-n",
  "sh",
  "-c",
  `exec 9>${POWER_OFF_LOCK}; flock 9; touch ${POWER_OFF_CANCELED}; shutdown -c || [ ! -e /run/systemd/shutdown/scheduled ]`,
];

/** Inputs of {@link buildUserData}. */
export interface UserDataInput {
  /** The SSH host key cloud-init installs (OpenSSH private key and `ssh-ed25519 …` public key). */
  readonly hostKey?: { readonly privateKey: string; readonly publicKey: string } | undefined;
  /**
   * Power the instance off this many minutes after its first boot (`shutdown -h +N`; with
   * InstanceInitiatedShutdownBehavior=terminate that terminates it) unless the agent cancels it
   * when it starts: a client that dies between launch and the agent's start costs minutes, not a
   * day. Absent: no such power-off.
   */
  readonly powerOffAfterMin?: number | undefined;
}

/**
 * The instance's cloud-config: the boot-time power-off, the SSH host key runctl chose (so the first
 * connection is verified), and the AWS CLI when the image lacks it (the agent uses it for S3; the
 * Deep Learning AMIs have it). Returned base64-encoded, as RunInstances wants it.
 *
 * The power-off is the first `runcmd` (once per instance, late in the first boot, when logind can
 * schedule it: in an early stage `shutdown +N` may power off at once). The agent may start before
 * that runs (sshd answers earlier): the lock and the marker make the order not matter; whichever
 * comes second sees the other.
 *
 * @example
 * ```ts
 * const userData = buildUserData({ hostKey, powerOffAfterMin: 40 });
 * ```
 */
export function buildUserData(input: UserDataInput): string {
  const lines = ["#cloud-config"];
  const minutes = input.powerOffAfterMin;
  if (minutes !== undefined) {
    if (!Number.isInteger(minutes) || minutes < 1) throw new RangeError(`powerOffAfterMin must be a whole number of minutes >= 1, got ${minutes}`);
  }
  if (input.hostKey) {
    lines.push("ssh_deletekeys: true", "ssh_genkeytypes: []", "ssh_keys:", "  ed25519_private: |");
    for (const l of input.hostKey.privateKey.trim().split("\n")) lines.push(`    ${l}`);
    lines.push(`  ed25519_public: ${input.hostKey.publicKey}`);
  }
  lines.push("runcmd:");
  if (minutes !== undefined) lines.push(`  - [sh, -c, "exec 9>${POWER_OFF_LOCK}; flock 9; [ -e ${POWER_OFF_CANCELED} ] || shutdown -h +${minutes}"]`);
  lines.push(`  - [sh, -c, "command -v aws >/dev/null || snap install aws-cli --classic || true"]`);
  return Buffer.from(lines.join("\n") + "\n", "utf8").toString("base64");
}

/** The minutes of the boot-time power-off in base64 user data, if any (for tests and fakes). */
export function powerOffMinutesOfUserData(userDataBase64: string): number | undefined {
  const m = / shutdown -h \+(\d+)"\]$/m.exec(Buffer.from(userDataBase64, "base64").toString("utf8"));
  return m ? Number(m[1]) : undefined;
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
