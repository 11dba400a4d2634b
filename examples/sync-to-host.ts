/**
 * Mirror a project folder onto an SSH machine, without training: the sync step on its own.
 *
 *   RUNCTL_SSH_HOST=ml@10.0.0.5 RUNCTL_SSH_KEY=~/.ssh/id_ed25519 npx tsx examples/sync-to-host.ts ./my-project [/abs/remote/dir]
 *
 * The remote folder becomes an exact, sha256-verified copy of the local one: default excludes (.git,
 * node_modules, __pycache__, .venv, *.pyc), every .gitignore, .runctlignore and `ignore` apply, with
 * `!negation`. Run it again after editing: only changed files travel, deleted files are deleted on the
 * host, and a file someone edited on the host is put back.
 */
import { basename, posix, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { Runctl, isRunctlError, sshHosts, type SshHost, type Storage, type SyncResult } from "runctl";
import { sshHostsFromEnv } from "./ssh-env.js";

export interface SyncToHostOptions {
  /** The machine. */
  readonly host: SshHost;
  /** The local folder to mirror. */
  readonly localDir: string;
  /**
   * Absolute folder on the host that becomes the mirror (runctl owns it: anything else in it is deleted).
   * @defaultValue `<runctl root on the host>/work/<basename of localDir>`
   */
  readonly remoteDir?: string;
  /** Extra ignore patterns (gitignore syntax, relative to `localDir`). @defaultValue `[]` */
  readonly ignore?: readonly string[];
  /**
   * Send the files through S3 instead of the SSH channel (what machines reached without SSH use): the
   * tar is uploaded here, fetched and applied by the machine, then deleted. @defaultValue the SSH channel
   */
  readonly staging?: Storage;
  /** Print what happened. @defaultValue true */
  readonly verbose?: boolean;
}

export async function main(options: SyncToHostOptions): Promise<{ result: SyncResult; remoteDir: string; address: string }> {
  const machine = await Runctl.instance(sshHosts(options.host)).provision();
  try {
    const remoteDir = options.remoteDir ?? posix.join(machine.rootDir, "work", basename(resolve(options.localDir)));
    const result = await machine.sync(options.localDir, remoteDir, { ignore: options.ignore ?? [], ...(options.staging ? { staging: { storage: options.staging } } : {}) });
    if (options.verbose !== false) {
      const what = result.uploadedFiles === 0 && result.deletedFiles === 0 ? "already up to date" : `${result.uploadedFiles} sent (${result.uploadedBytes} bytes), ${result.deletedFiles} deleted`;
      console.log(`${machine.address}:${remoteDir}: ${result.files} files, ${what}, verified in ${result.durationMs} ms`);
    }
    return { result, remoteDir, address: machine.address };
  } finally {
    await machine.release();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const [target] = sshHostsFromEnv();
  const [localDir, remoteDir] = process.argv.slice(2);
  if (!target || !localDir) {
    console.error("usage: RUNCTL_SSH_HOST=user@host[:port] [RUNCTL_SSH_KEY=...] [RUNCTL_SSH_KNOWN_HOSTS=...] npx tsx examples/sync-to-host.ts <local-dir> [remote-dir]");
    process.exit(2);
  }
  main({
    host: target,
    localDir,
    ...(remoteDir ? { remoteDir } : {}),
  }).then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(isRunctlError(err) ? `${err.code}: ${err.message}` : err);
      process.exit(1);
    },
  );
}
