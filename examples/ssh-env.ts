/**
 * Reads the SSH machines the examples run on from the environment, so each example's command line
 * stays short:
 *
 *   RUNCTL_SSH_HOST=ml@10.0.0.5:22           one host (RUNCTL_SSH_HOSTS=a,b,c for a pool)
 *   RUNCTL_SSH_KEY=~/.ssh/id_ed25519         private key (default: ssh-agent or ~/.ssh/id_*)
 *   RUNCTL_SSH_KNOWN_HOSTS=~/.ssh/known_hosts
 */
import type { SshHost } from "runctl";

/** The hosts named by `variable` (comma-separated `user@host:port`), with the shared key settings. */
export function sshHostsFromEnv(variable: "RUNCTL_SSH_HOST" | "RUNCTL_SSH_HOSTS" | "RUNCTL_SLURM_LOGIN" = "RUNCTL_SSH_HOST"): SshHost[] {
  const key = process.env["RUNCTL_SSH_KEY"];
  const knownHosts = process.env["RUNCTL_SSH_KNOWN_HOSTS"];
  return (process.env[variable] ?? "")
    .split(",")
    .map((t) => t.trim())
    .filter(Boolean)
    .map((target) => {
      const m = /^(?:([^@]+)@)?([^:]+)(?::(\d+))?$/.exec(target);
      return {
        host: m?.[2] ?? target,
        ...(m?.[1] ? { username: m[1] } : {}),
        ...(m?.[3] ? { port: Number(m[3]) } : {}),
        ...(key ? { privateKeyPath: key } : {}),
        ...(knownHosts ? { knownHostsPath: knownHosts } : {}),
      };
    });
}
