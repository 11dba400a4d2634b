import { slurm, sshHosts, type AttachOptions, type MachineRecord, type SshHost } from "../index.js";
import { CliError } from "./cli-errors.js";
import type { StoredRunRecord } from "./run-journals.js";

/**
 * The `Runctl.attach` options for a run, rebuilt from its journal: nothing for `local` runs (the
 * SDK's default), an `sshHosts` provider from the machine record for `ssh-hosts` runs (host, port,
 * user, key and known_hosts paths: the journal never holds secrets), a `slurm` provider on the same
 * login node and folder for `slurm` runs. Other providers (`ec2`) need
 * settings the journal does not have, so the CLI refuses them with a pointer to the SDK.
 *
 * @param warn - Receives the provider's warnings (stderr). @defaultValue none
 * @example
 * ```ts
 * const run = Runctl.attach(runId, attachOptionsFor(readRunJournal(runId).record, (m) => console.error(m)));
 * ```
 */
export function attachOptionsFor(record: StoredRunRecord, warn: (message: string) => void = () => {}): AttachOptions {
  if (record.provider === "local") return {};
  if (record.provider === "ssh-hosts" && record.machine) return { provider: sshHosts(sshHostOf(record.machine), { onWarning: warn }) };
  if (record.provider === "slurm" && record.machine) {
    const { rootDir, ...login } = sshHostOf(record.machine);
    return { provider: slurm({ login, ...(rootDir ? { workdir: rootDir } : {}), onWarning: warn }) };
  }
  throw new CliError(
    "UNSUPPORTED",
    `Run ${record.runId} ran on the ${record.provider} provider, which the CLI cannot rebuild from the run's journal; use the SDK: Runctl.attach(${JSON.stringify(record.runId)}, { provider }).`,
  );
}

function sshHostOf(machine: MachineRecord): SshHost {
  const text = (key: string): string | undefined => (typeof machine[key] === "string" ? (machine[key] as string) : undefined);
  const host = text("host");
  if (!host) throw new CliError("UNSUPPORTED", `The journal's record of machine ${machine.id} has no host; use the SDK: Runctl.attach(runId, { provider }).`);
  const username = text("username");
  const privateKeyPath = text("privateKeyPath");
  const knownHostsPath = text("knownHostsPath");
  const python = text("python");
  const rootDir = text("rootDir");
  // An alias is resolved through the same SSH config file again; a jump chain given as a string is kept.
  const sshConfig = machine["sshConfig"] === false ? false : text("sshConfig");
  const proxyJump = text("proxyJump");
  return {
    host,
    ...(typeof machine["port"] === "number" ? { port: machine["port"] } : {}),
    ...(username ? { username } : {}),
    ...(privateKeyPath ? { privateKeyPath } : {}),
    ...(knownHostsPath ? { knownHostsPath } : {}),
    ...(sshConfig !== undefined ? { sshConfig } : {}),
    ...(proxyJump ? { proxyJump } : {}),
    ...(python ? { python } : {}),
    ...(rootDir ? { rootDir } : {}),
  };
}
