import { isRunctlError } from "../../errors/runctl-error.js";
import { shellJoin } from "../../transport/shell-quote.js";
import type { DoctorCheck } from "../../util/doctor-check.js";

/**
 * The doctor's check of an SSH host that could not be connected to: the error's code and message,
 * and what to run about it. An unknown host key is never trusted here: the fix is the ssh-keyscan
 * line to run after comparing the fingerprint (decision 0025).
 *
 * @example
 * ```ts
 * sshFailureCheck({ host: "10.0.0.5", username: "ml" }, err).fix; // "compare ... then run: ssh-keyscan -p 22 -t ssh-ed25519 10.0.0.5 >> ~/.ssh/known_hosts"
 * ```
 */
export function sshFailureCheck(target: { readonly host: string; readonly port?: number | undefined; readonly username?: string | undefined }, err: unknown): DoctorCheck {
  const host = target.host;
  const port = target.port ?? 22;
  const title = `SSH to ${target.username ? `${target.username}@` : ""}${host}:${port}`;
  if (!isRunctlError(err)) return { id: "transport", title, status: "fail", detail: err instanceof Error ? err.message : String(err), fix: "See the message above." };
  const base = { id: "transport", title, status: "fail" as const, detail: err.message, code: err.code };
  const d = err.details;
  const str = (k: string): string | undefined => (typeof d[k] === "string" ? (d[k] as string) : undefined);
  switch (err.code) {
    case "HOST_KEY_MISMATCH": {
      const knownHosts = str("knownHostsPath") ?? "~/.ssh/known_hosts";
      // The address the key is recorded under: an ssh-config alias's HostName and Port, not the alias.
      const keyHost = str("hostName") ?? host;
      const keyPort = typeof d["port"] === "number" ? d["port"] : port;
      const type = str("presentedKeyType");
      const fp = str("presentedFingerprint");
      if (d["reason"] === "unknown" && type) {
        return {
          ...base,
          detail: `host key not in ${knownHosts}: ${type} ${fp ?? ""}`.trim(),
          fix: `Compare ${fp ?? "the fingerprint"} with \`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub\` on the host, then run: ${shellJoin(["ssh-keyscan", "-p", String(keyPort), "-t", type, keyHost])} >> ${knownHosts}`,
        };
      }
      if (d["reason"] === "changed") {
        return { ...base, fix: `Only if the host was really reinstalled: ${shellJoin(["ssh-keygen", "-R", keyPort === 22 ? keyHost : `[${keyHost}]:${keyPort}`, "-f", knownHosts])}, then add the new key with ssh-keyscan (compare its fingerprint first).` };
      }
      return { ...base, fix: `The key is revoked in ${knownHosts}: find out why before connecting.` };
    }
    case "AUTH_FAILED":
      return { ...base, fix: "Check the user name (user@host) and the key (--identity FILE, or privateKeyPath); the public key must be in ~/.ssh/authorized_keys on the host." };
    case "HOST_UNREACHABLE":
      return { ...base, fix: "Check the address and port, that sshd runs on the host, and that no firewall drops the connection." };
    default:
      return base;
  }
}
