import { RunctlError } from "../../../errors/runctl-error.js";
import { parseS3Uri } from "../../../storage/s3/s3-uri.js";
import { validateStorageKey } from "../../../storage/storage-key.js";
import { shellQuote } from "../../../transport/shell-quote.js";
import type { Transport } from "../../../transport/types.js";
import type { PrewarmVolumeResult } from "./ebs-types.js";
import { checkMachinePath, markedJson, scriptFailure } from "./mount-volume.js";

/**
 * Options of {@link prewarmVolume}.
 *
 * @example
 * ```ts
 * await prewarmVolume(machine.transport, { source: "s3://ml-data/imagenet", mountPoint: "/mnt/data", to: "imagenet" });
 * ```
 */
export interface PrewarmVolumeOptions {
  /** The S3 prefix to copy, `s3://bucket/prefix`; every object under `prefix/` lands at its relative path. */
  readonly source: string;
  /** Where the volume is mounted on the machine (it must exist). */
  readonly mountPoint: string;
  /** A folder inside the mount point to copy into (a relative path). @defaultValue the mount point itself */
  readonly to?: string | undefined;
  /** An S3-protocol endpoint URL (`--endpoint-url`), for stores other than AWS. @defaultValue AWS */
  readonly endpoint?: string | undefined;
  /** The bucket's region (`--region`). @defaultValue the machine's AWS configuration */
  readonly region?: string | undefined;
  /**
   * Credentials for the copy, handed to the script on stdin (never in a command line or a file).
   * @defaultValue the machine's own (instance profile, environment, `~/.aws`)
   */
  readonly credentials?: { readonly accessKeyId: string; readonly secretAccessKey: string; readonly sessionToken?: string | undefined } | undefined;
  /** The AWS CLI on the machine. @defaultValue `"aws"` */
  readonly awsCli?: string | undefined;
  /** Extra environment for the script. @defaultValue `{}` */
  readonly env?: Readonly<Record<string, string>> | undefined;
  /** Aborts the copy with ABORTED. */
  readonly signal?: AbortSignal | undefined;
}

/**
 * The POSIX sh script {@link prewarmVolume} runs (exported to be read and tested): list the source
 * (`aws s3 ls --recursive`), `aws s3 sync` it into the folder, then join the listing with
 * `find -printf '%s %P'` of the folder and print `RUNCTL_EBS_PREWARM {files, bytes, missing,
 * mismatched}`; exit 18 when any object is missing or has another size. Credentials, when given,
 * are read from stdin.
 *
 * @example
 * ```ts
 * const script = prewarmVolumeScript({ source: "s3://ml-data/mnist", mountPoint: "/mnt/data" });
 * ```
 */
export function prewarmVolumeScript(options: Omit<PrewarmVolumeOptions, "signal" | "env">): string {
  const { bucket, prefix } = parseS3Uri(options.source);
  const mountPoint = checkMachinePath("mountPoint", options.mountPoint);
  let dest = mountPoint;
  if (options.to !== undefined && options.to !== "") {
    try {
      dest = `${mountPoint}/${validateStorageKey(options.to.replace(/\/+$/, ""))}`;
    } catch (cause) {
      throw new RunctlError("INVALID_ARGUMENT", `to must be a relative folder inside the mount point, got ${JSON.stringify(options.to)}.`, { cause });
    }
  }
  if (options.endpoint !== undefined && !/^https?:\/\/[^\s/]+(\/\S*)?$/.test(options.endpoint)) {
    throw new RunctlError("INVALID_ARGUMENT", `endpoint must be an http(s) URL, got ${JSON.stringify(options.endpoint)}.`);
  }
  if (options.region !== undefined && !/^[a-z0-9-]{2,32}$/.test(options.region)) throw new RunctlError("INVALID_ARGUMENT", `region must be an AWS region such as "us-east-1", got ${JSON.stringify(options.region)}.`);
  const awsCli = options.awsCli ?? "aws";
  if (awsCli === "" || awsCli.includes("\0")) throw new RunctlError("INVALID_ARGUMENT", "awsCli must be a command name or path.");
  const c = options.credentials;
  if (c !== undefined && (!c.accessKeyId || !c.secretAccessKey || /[\r\n]/.test(`${c.accessKeyId}${c.secretAccessKey}${c.sessionToken ?? ""}`))) {
    throw new RunctlError("INVALID_ARGUMENT", "credentials need an accessKeyId and a secretAccessKey, without line breaks.");
  }
  const syncUri = prefix === "" ? `s3://${bucket}` : `s3://${bucket}/${prefix}`;
  const listUri = prefix === "" ? `s3://${bucket}` : `s3://${bucket}/${prefix}/`;
  return `set -u
PATH="$PATH:/usr/local/bin"
fail() { code=$1; shift; echo "runctl-ebs: $*" >&2; exit "$code"; }
SRC=${shellQuote(syncUri)}
LIST_URI=${shellQuote(listUri)}
PFX=${shellQuote(prefix === "" ? "" : `${prefix}/`)}
ROOT=${shellQuote(mountPoint)}
DST=${shellQuote(dest)}
AWS=${shellQuote(awsCli)}
ENDPOINT=${shellQuote(options.endpoint ?? "")}
REGION=${shellQuote(options.region ?? "")}
if [ ${c ? 1 : 0} = 1 ]; then
  IFS= read -r AWS_ACCESS_KEY_ID || fail 17 "no credentials on stdin"
  IFS= read -r AWS_SECRET_ACCESS_KEY || fail 17 "no credentials on stdin"
  IFS= read -r AWS_SESSION_TOKEN || AWS_SESSION_TOKEN=""
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  if [ -n "$AWS_SESSION_TOKEN" ]; then export AWS_SESSION_TOKEN; else unset AWS_SESSION_TOKEN; fi
fi
command -v "$AWS" >/dev/null 2>&1 || fail 16 "the AWS CLI ($AWS) is missing on this machine; install it or pass awsCli"
[ -d "$ROOT" ] || fail 10 "$ROOT does not exist; mount the volume first"
mkdir -p "$DST" || fail 17 "cannot create $DST"
set --
[ -z "$ENDPOINT" ] || set -- "$@" --endpoint-url "$ENDPOINT"
[ -z "$REGION" ] || set -- "$@" --region "$REGION"
TMP=$(mktemp -d) || fail 17 "mktemp failed"
trap 'rm -rf "$TMP"' EXIT

# What the source holds now: the check below compares against this, not against sync's exit status.
"$AWS" s3 ls "$LIST_URI" --recursive "$@" > "$TMP/want" 2> "$TMP/ls.err"
rc=$?
if [ "$rc" != 0 ]; then
  # An empty prefix is exit 1 with no output at all; anything else is an error.
  if [ "$rc" != 1 ] || [ -s "$TMP/want" ] || [ -s "$TMP/ls.err" ]; then
    cat "$TMP/ls.err" >&2
    fail 17 "aws s3 ls $LIST_URI failed (exit $rc)"
  fi
fi
"$AWS" s3 sync "$SRC" "$DST" --only-show-errors --no-progress "$@" >&2
rc=$?
[ "$rc" = 0 ] || fail 17 "aws s3 sync $SRC $DST failed (exit $rc)"

find "$DST" -type f -printf '%s %P\\n' > "$TMP/have" || fail 18 "cannot list $DST"
PFX="$PFX" awk '
  FILENAME == ARGV[1] { have[substr($0, length($1) + 2)] = $1; next }
  {
    if (!match($0, /^[^ ]+ +[^ ]+ +[0-9]+ /)) next
    split(substr($0, 1, RLENGTH), f, " ")
    key = substr($0, RLENGTH + 1)
    pfx = ENVIRON["PFX"]
    if (substr(key, 1, length(pfx)) != pfx) next
    rel = substr(key, length(pfx) + 1)
    if (rel == "" || substr(rel, length(rel)) == "/") next
    files++
    bytes += f[3]
    if (!(rel in have)) { missing++; if (missing <= 5) print "runctl-ebs: missing on the volume: " rel > "/dev/stderr" }
    else if (have[rel] != f[3]) { bad++; if (bad <= 5) print "runctl-ebs: wrong size on the volume: " rel > "/dev/stderr" }
  }
  END {
    printf "RUNCTL_EBS_PREWARM {\\"files\\":%d,\\"bytes\\":%.0f,\\"missing\\":%d,\\"mismatched\\":%d}\\n", files, bytes, missing, bad
    if (missing + bad > 0) exit 18
  }
' "$TMP/have" "$TMP/want"
rc=$?
[ "$rc" = 0 ] || fail 18 "files from $SRC are missing or incomplete in $DST"
`;
}

/**
 * Pre-warms a mounted volume from S3 on the machine that mounts it: runs `aws s3 sync` there (with
 * `--endpoint-url` / `--region` when given) into the mount point, then verifies on the machine that
 * every object listed under the source is present with its size, counting files and bytes (the
 * copy's exit status alone is not trusted). The machine needs the AWS CLI and S3 access (its
 * instance profile, or `credentials`, which travel on stdin).
 *
 * @returns Files and bytes verified on the volume, the folder, and the duration.
 * @throws RunctlError INVALID_URI / INVALID_ARGUMENT before anything runs; NOT_FOUND when the mount
 *   point is missing; UNSUPPORTED without the AWS CLI; COMMAND_FAILED when the copy fails or files
 *   are missing afterwards; ABORTED.
 *
 * @example
 * ```ts
 * const { files, bytes } = await prewarmVolume(machine.transport, { source: "s3://ml-data/imagenet", mountPoint: "/mnt/data" });
 * ```
 */
export async function prewarmVolume(transport: Transport, options: PrewarmVolumeOptions): Promise<PrewarmVolumeResult> {
  const script = prewarmVolumeScript(options);
  const mountPoint = checkMachinePath("mountPoint", options.mountPoint);
  const path = options.to ? `${mountPoint}/${options.to.replace(/\/+$/, "")}` : mountPoint;
  const c = options.credentials;
  if (c && transport.stdinLeavesCopy === true) {
    // SSM stages stdin in S3: the keys would be written there. The instance profile must do.
    throw new RunctlError("UNSUPPORTED", `prewarmVolume(): credentials cannot be sent to ${transport.host} over a transport that stores its input (SSM); let the instance profile read ${parseS3Uri(options.source).uri} and omit credentials.`);
  }
  const started = performance.now();
  const result = await transport.exec(
    { script },
    {
      ...(c ? { stdin: `${c.accessKeyId}\n${c.secretAccessKey}\n${c.sessionToken ?? ""}\n` } : {}),
      env: options.env,
      signal: options.signal,
    },
  );
  const what = `pre-warm ${path} from ${parseS3Uri(options.source).uri}`;
  if (result.exitCode !== 0) throw scriptFailure(result, transport.host, what);
  const json = markedJson(result.stdout, "RUNCTL_EBS_PREWARM");
  const files = json?.["files"];
  const bytes = json?.["bytes"];
  if (typeof files !== "number" || typeof bytes !== "number") {
    throw new RunctlError("COMMAND_FAILED", `${what} on ${transport.host} printed no result line.`, { details: { stdoutTail: result.stdoutTail, stderrTail: result.stderrTail } });
  }
  return { files, bytes, path, durationMs: Math.round(performance.now() - started) };
}
