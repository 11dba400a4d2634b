import { RunctlError } from "../../errors/runctl-error.js";
import type { S3StorageDescriptor } from "../../storage/types.js";
import { shellJoin, shellQuote } from "../shell-quote.js";
import type { Command, ExecOptions } from "../types.js";

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Exit code of a script whose staging step (fetching stdin, uploading a file) failed; stderr then has {@link STAGING_FAILED_MARK}. */
export const STAGING_FAILED_EXIT = 212;
/** The stderr line prefix that goes with {@link STAGING_FAILED_EXIT}. */
export const STAGING_FAILED_MARK = "runctl-ssm: staging failed:";
/** Exit code of a file transfer whose remote file does not exist or is not a regular file. */
export const NO_SUCH_FILE_EXIT = 44;
/** Exit code of an inline `getFile` of a file too large for SSM's inline output. */
export const TOO_LARGE_EXIT = 45;

/** Where the aws CLI that runs as root (SSM's user) is found on common AMIs (snap on Ubuntu). */
const ROOT_PATH = 'PATH="$PATH:/usr/local/bin:/snap/bin"; export PATH';

/**
 * The user's command as one `sh` line: `cd -- <cwd> && export K=V ... && exec <argv>` with every
 * word quoted ({@link shellQuote}), or `exec sh -c <script>`.
 *
 * @throws RunctlError INVALID_ARGUMENT for an empty argv or cwd, a NUL byte, or a bad variable name.
 * @example
 * ```ts
 * userCommand(["echo", "a b"], { cwd: "/srv" }); // "cd -- /srv && exec echo 'a b'"
 * ```
 */
export function userCommand(command: Command, options: Pick<ExecOptions, "cwd" | "env"> = {}): string {
  try {
    const parts: string[] = [];
    if (options.cwd !== undefined) {
      if (options.cwd === "") throw new RunctlError("INVALID_ARGUMENT", "exec cwd must not be empty.");
      parts.push(`cd -- ${shellQuote(options.cwd)}`);
    }
    const env = Object.entries(options.env ?? {});
    for (const [name] of env) {
      if (!ENV_NAME.test(name)) throw new RunctlError("INVALID_ARGUMENT", `Invalid environment variable name ${JSON.stringify(name)}: use letters, digits and _, not starting with a digit.`);
    }
    if (env.length > 0) parts.push(`export ${env.map(([name, value]) => `${name}=${shellQuote(value)}`).join(" ")}`);
    if ("script" in command) {
      parts.push(`exec sh -c ${shellQuote(command.script)}`);
    } else {
      if (command.length === 0) throw new RunctlError("INVALID_ARGUMENT", "exec needs a non-empty argv.");
      parts.push(`exec ${shellJoin(command)}`);
    }
    return parts.join(" && ");
  } catch (e) {
    if (e instanceof TypeError) throw new RunctlError("INVALID_ARGUMENT", `exec: ${e.message}`, { cause: e });
    throw e;
  }
}

/**
 * Runs a `sh` line as `user`: `sudo -n -u USER -H -- sh -c <line>` (sudo starts a clean
 * environment, so variables are exported inside `line`), or `sh -c <line>` for the agent's own user.
 *
 * @example
 * ```ts
 * asUser("exec id -un", "ubuntu"); // "sudo -n -u ubuntu -H -- sh -c 'exec id -un'"
 * ```
 */
export function asUser(line: string, user: string | null): string {
  return user === null ? `sh -c ${shellQuote(line)}` : `sudo -n -u ${shellQuote(user)} -H -- sh -c ${shellQuote(line)}`;
}

/** Lines that create the aws CLI settings file for path-style addressing (S3-protocol servers). */
function awsConfigLines(d: S3StorageDescriptor): string[] {
  if (!d.forcePathStyle) return [];
  const text = `[default]\n${d.region ? `region = ${d.region}\n` : ""}s3 =\n    addressing_style = path\n`;
  return [`runctl_cfg=$(mktemp) || exit ${STAGING_FAILED_EXIT}`, `printf '%s' ${shellQuote(text)} > "$runctl_cfg"`];
}

/**
 * An `aws s3 cp FROM TO` line for the machine (run as root with the instance profile), with the
 * descriptor's endpoint, region, addressing and checksum settings. Settings go in the aws process's
 * own environment only: the user's command never sees them.
 *
 * @example
 * ```ts
 * awsS3Cp(descriptor, "s3://bucket/k", "-"); // "AWS_PAGER= aws s3 cp s3://bucket/k - --only-show-errors --region us-east-1"
 * ```
 */
export function awsS3Cp(d: S3StorageDescriptor, from: string, to: string): string {
  const env = ["AWS_PAGER="];
  if (d.forcePathStyle) env.push('AWS_CONFIG_FILE="$runctl_cfg"');
  if (d.checksums === "when_required") env.push("AWS_REQUEST_CHECKSUM_CALCULATION=when_required", "AWS_RESPONSE_CHECKSUM_VALIDATION=when_required");
  const args = ["aws", "s3", "cp", from, to, "--only-show-errors"];
  if (d.endpoint) args.push("--endpoint-url", d.endpoint);
  if (d.region) args.push("--region", d.region);
  return `${env.join(" ")} ${shellJoin(args)}`;
}

/**
 * A staged object as the machine reaches it.
 *
 * @example
 * ```ts
 * const input: StagedObject = { descriptor: staging.machineDescriptor(), uri: "s3://bucket/runctl-staging/r1/x.stdin" };
 * ```
 */
export interface StagedObject {
  /** How the machine reaches the bucket. @defaultValue none (required) */
  readonly descriptor: S3StorageDescriptor;
  /** `s3://bucket/key`. @defaultValue none (required) */
  readonly uri: string;
}

/**
 * The whole script SSM runs (as root) for one exec. Without stdin: `exec <as user> </dev/null`.
 * With a staged stdin the object is streamed into the command (`aws s3 cp URI - | ... | command`,
 * never written to the machine's disk); a relay keeps draining it when the command stops reading
 * early, so the aws exit status tells only whether the fetch itself failed. A failed fetch ends the
 * script with {@link STAGING_FAILED_EXIT} and a {@link STAGING_FAILED_MARK} line on stderr.
 *
 * @example
 * ```ts
 * execScript(userCommand(["cat"]), "ubuntu", { descriptor, uri: "s3://bucket/runctl-staging/r1/x.stdin" });
 * ```
 */
export function execScript(line: string, user: string | null, stdin?: StagedObject): string {
  if (!stdin) return `exec ${asUser(line, user)} </dev/null`;
  return [
    ROOT_PATH,
    `runctl_rc=$(mktemp) || exit ${STAGING_FAILED_EXIT}`,
    ...awsConfigLines(stdin.descriptor),
    `{ ${awsS3Cp(stdin.descriptor, stdin.uri, "-")} </dev/null; echo $? > "$runctl_rc"; } | { cat || cat > /dev/null; } | ${asUser(line, user)}`,
    "runctl_status=$?",
    'runctl_fetch=$(cat "$runctl_rc" 2>/dev/null)',
    `rm -f "$runctl_rc"${stdin.descriptor.forcePathStyle ? ' "$runctl_cfg"' : ""}`,
    `if [ "$runctl_fetch" != 0 ]; then echo ${shellQuote(`${STAGING_FAILED_MARK} could not fetch the staged stdin from ${stdin.uri} (aws exit `)}"$runctl_fetch"${shellQuote("; is the aws CLI installed, and does the instance profile allow s3:GetObject?)")} >&2; exit ${STAGING_FAILED_EXIT}; fi`,
    'exit "$runctl_status"',
  ].join("\n");
}

/**
 * The user-side line of `putFile`: write `remotePath` atomically (temporary name in the same
 * folder, mode, rename) from stdin, or from inline base64 bytes.
 *
 * @example
 * ```ts
 * putFileLine("/home/ubuntu/a.txt", ".a.txt.runctl-1a2b.part", 0o644);
 * ```
 */
export function putFileLine(remotePath: string, tempName: string, mode: number | undefined, inlineBase64?: string): string {
  const dir = remotePath.slice(0, remotePath.lastIndexOf("/")) || "/";
  const tmp = `${dir === "/" ? "" : dir}/${tempName}`;
  const write = inlineBase64 === undefined ? `cat > ${shellQuote(tmp)}` : `printf '%s' ${shellQuote(inlineBase64)} | base64 -d > ${shellQuote(tmp)}`;
  // With a mode, the temporary file is created private (umask 077) and given its mode before the rename.
  const steps = [`mkdir -p -- ${shellQuote(dir)}`, mode === undefined ? write : `(umask 077 && ${write})`];
  if (mode !== undefined) steps.push(`chmod ${(mode & 0o7777).toString(8)} ${shellQuote(tmp)}`);
  steps.push(`mv -f -- ${shellQuote(tmp)} ${shellQuote(remotePath)}`);
  return `${steps.join(" && ")} || { runctl_rc=$?; rm -f -- ${shellQuote(tmp)}; exit $runctl_rc; }`;
}

/** The user-side check that `remotePath` is a regular file (exit {@link NO_SUCH_FILE_EXIT} otherwise). */
function regularFileCheck(remotePath: string): string {
  return `test -f ${shellQuote(remotePath)} || { echo ${shellQuote(`runctl-ssm: no such file: ${remotePath}`)} >&2; exit ${NO_SUCH_FILE_EXIT}; }`;
}

/**
 * The script of a staged `getFile`: the user reads the file, root uploads it (`cat | aws s3 cp - URI`).
 * Exit {@link NO_SUCH_FILE_EXIT} when it is missing, {@link STAGING_FAILED_EXIT} when the upload failed.
 *
 * @example
 * ```ts
 * getFileScript("/home/ubuntu/out.bin", "ubuntu", { descriptor, uri: "s3://bucket/runctl-staging/r1/x.get" });
 * ```
 */
export function getFileScript(remotePath: string, user: string | null, target: StagedObject): string {
  const read = asUser(`${regularFileCheck(remotePath)}; exec cat -- ${shellQuote(remotePath)}`, user);
  return [
    ROOT_PATH,
    `runctl_rc=$(mktemp) || exit ${STAGING_FAILED_EXIT}`,
    ...awsConfigLines(target.descriptor),
    `{ ${read} </dev/null; echo $? > "$runctl_rc"; } | ${awsS3Cp(target.descriptor, "-", target.uri)}`,
    "runctl_up=$?",
    'runctl_read=$(cat "$runctl_rc" 2>/dev/null)',
    `rm -f "$runctl_rc"${target.descriptor.forcePathStyle ? ' "$runctl_cfg"' : ""}`,
    'if [ "$runctl_read" != 0 ]; then exit "${runctl_read:-1}"; fi',
    `if [ "$runctl_up" != 0 ]; then echo ${shellQuote(`${STAGING_FAILED_MARK} could not upload the file to ${target.uri} (aws exit `)}"$runctl_up"${shellQuote("; is the aws CLI installed, and does the instance profile allow s3:PutObject?)")} >&2; exit ${STAGING_FAILED_EXIT}; fi`,
    "exit 0",
  ].join("\n");
}

/**
 * The user-side line of an inline `getFile` (no staging): the file as base64 on stdout, refused
 * with {@link TOO_LARGE_EXIT} above `maxBytes` (SSM returns only 24,000 characters inline).
 *
 * @example
 * ```ts
 * inlineGetFileLine("/etc/hostname", 16384);
 * ```
 */
export function inlineGetFileLine(remotePath: string, maxBytes: number): string {
  const p = shellQuote(remotePath);
  return `${regularFileCheck(remotePath)}; runctl_size=$(wc -c < ${p}) || exit 1; if [ "$runctl_size" -gt ${maxBytes} ]; then echo "runctl-ssm: $runctl_size bytes" >&2; exit ${TOO_LARGE_EXIT}; fi; exec base64 < ${p}`;
}

/**
 * The `commands` parameter of AWS-RunShellScript for a script: one line that decodes the script
 * from base64 and runs it with `sh -c`. SSM interpolates `{{ ... }}` in parameter values (e.g.
 * `{{ssm:name}}`), which no shell quoting prevents; base64 has no braces, so every byte of every
 * argument reaches the shell as it was written.
 *
 * @example
 * ```ts
 * ssmCommands("echo hi"); // ["sh -c \"$(printf '%s' ZWNobyBoaQ== | base64 -d)\""]
 * ```
 */
export function ssmCommands(script: string): string[] {
  return [`sh -c "$(printf '%s' ${Buffer.from(script, "utf8").toString("base64")} | base64 -d)"`];
}

/**
 * A SendCommand `Comment` (at most 100 characters, no braces or control characters) naming the command.
 *
 * @example
 * ```ts
 * ssmComment("python3 train.py"); // "runctl: python3 train.py"
 * ```
 */
export function ssmComment(described: string): string {
  const text = `runctl: ${described}`.replace(/[^\x20-\x7e]|[{}]/g, " ");
  return text.length > 100 ? `${text.slice(0, 97)}...` : text;
}
