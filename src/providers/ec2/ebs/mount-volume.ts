import { CommandError, RunctlError, type RunctlErrorCode } from "../../../errors/runctl-error.js";
import { shellQuote } from "../../../transport/shell-quote.js";
import type { ExecResult, Transport } from "../../../transport/types.js";
import type { MountVolumeResult } from "./ebs-types.js";
import { validateDeviceName, validateVolumeId } from "./validate-volume.js";

/**
 * Filesystems {@link mountVolume} makes on a blank volume.
 *
 * @example
 * ```ts
 * await mountVolume(transport, { volumeId, mountPoint: "/mnt/data", fsType: "xfs" satisfies EbsFsType });
 * ```
 */
export type EbsFsType = "ext4" | "xfs";

/**
 * Options of {@link mountVolume}.
 *
 * @example
 * ```ts
 * await mountVolume(machine.transport, { volumeId: "vol-0123456789abcdef0", mountPoint: "/mnt/data" });
 * ```
 */
export interface MountVolumeOptions {
  /** The attached volume (`vol-…`): on Nitro its NVMe serial is `vol<hex>`, which is how the device is found. */
  readonly volumeId: string;
  /** Absolute folder on the machine to mount it at (created when missing). */
  readonly mountPoint: string;
  /** Filesystem to make when the volume is blank. A volume that has one is mounted with the one it has. @defaultValue `"ext4"` */
  readonly fsType?: EbsFsType | undefined;
  /** The device name it was attached as: found as `/dev/xvdX` on Xen instances (no NVMe serials there). @defaultValue `"/dev/sdf"` */
  readonly device?: string | undefined;
  /** User (or `user:group`) who gets the mount point's root folder. @defaultValue the user the transport runs as */
  readonly owner?: string | undefined;
  /** How long to wait for the device to appear after the attach. @defaultValue 120000 */
  readonly deviceWaitMs?: number | undefined;
  /**
   * Extra environment for the script. `RUNCTL_EBS_BYID_DIR` (default `/dev/disk/by-id`),
   * `RUNCTL_EBS_SYS_BLOCK_DIR` (default `/sys/block`) and `RUNCTL_EBS_DEV_DIR` (default `/dev`) move
   * where it looks for the device (tests point them at a fake folder).
   * @defaultValue `{}`
   */
  readonly env?: Readonly<Record<string, string>> | undefined;
  /** Aborts the command with ABORTED. */
  readonly signal?: AbortSignal | undefined;
}

/**
 * Options of {@link unmountVolume}.
 *
 * @example
 * ```ts
 * await unmountVolume(transport, { mountPoint: "/mnt/data", signal });
 * ```
 */
export interface UnmountVolumeOptions {
  /** The mount point to unmount. Nothing mounted there: nothing to do. */
  readonly mountPoint: string;
  /** Aborts the command with ABORTED. */
  readonly signal?: AbortSignal | undefined;
}

/**
 * Exit codes of the machine-side scripts, and the error code each becomes.
 *
 * @example
 * ```ts
 * EBS_SCRIPT_EXIT[10]?.code; // "NOT_FOUND"
 * ```
 */
export const EBS_SCRIPT_EXIT: Readonly<Record<number, { readonly code: RunctlErrorCode; readonly what: string }>> = {
  10: { code: "NOT_FOUND", what: "the volume's block device did not appear" },
  11: { code: "RESOURCE_IN_USE", what: "the volume holds data runctl does not recognise as a filesystem; it was not formatted" },
  12: { code: "RESOURCE_IN_USE", what: "the mount point or the device is already in use" },
  13: { code: "COMMAND_FAILED", what: "making the filesystem failed" },
  14: { code: "COMMAND_FAILED", what: "mounting failed" },
  15: { code: "COMMAND_FAILED", what: "probing the device failed" },
  16: { code: "UNSUPPORTED", what: "a tool the script needs is missing on the machine" },
  17: { code: "COMMAND_FAILED", what: "copying from S3 failed" },
  18: { code: "COMMAND_FAILED", what: "files from S3 are missing or incomplete on the volume" },
};

/**
 * Checks an absolute POSIX path on the machine (no `..`, not `/`) and drops trailing slashes;
 * INVALID_ARGUMENT otherwise.
 *
 * @example
 * ```ts
 * checkMachinePath("mountPoint", "/mnt/data/"); // "/mnt/data"
 * ```
 */
export function checkMachinePath(what: string, path: unknown): string {
  if (typeof path !== "string" || !path.startsWith("/") || path.includes("\0") || path.includes("\n") || path.split("/").some((p) => p === "..")) {
    throw new RunctlError("INVALID_ARGUMENT", `${what} must be an absolute path on the machine without "..", got ${JSON.stringify(path)}.`);
  }
  if (path === "/" || path.replace(/\/+$/, "") === "") throw new RunctlError("INVALID_ARGUMENT", `${what} cannot be "/".`);
  return path.length > 1 ? path.replace(/\/+$/, "") : path;
}

/** The Xen names of a device: `/dev/sdf` is `/dev/xvdf` on Xen kernels. */
function xenNames(device: string): [string, string] {
  const letters = device.replace(/^\/dev\/(sd|xvd)/, "");
  return [`/dev/xvd${letters}`, `/dev/sd${letters}`];
}

/** Shared script prelude: strict-ish sh, sbin on PATH, sudo only when not root, `fail CODE MSG`. */
const PRELUDE = `set -u
PATH="$PATH:/usr/sbin:/sbin"
export PATH
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo -n"
fail() { code=$1; shift; echo "runctl-ebs: $*" >&2; exit "$code"; }
`;

/**
 * The POSIX sh script {@link mountVolume} runs (exported so it can be read and tested). Every value
 * is quoted with `shellQuote`. Steps: find the block device (NVMe by-id link
 * `nvme-Amazon_Elastic_Block_Store_vol<hex>`, else an NVMe whose sysfs serial is `vol<hex>`, else the
 * Xen name of the attach device), waiting for it to appear; if the mount point already has this
 * device, report and stop; refuse a device mounted elsewhere; probe with `blkid -p`; make a
 * filesystem only when there is none, no partition table and the first MiB is all zeros; mount;
 * give the mount point's root folder to the user; print one `RUNCTL_EBS_MOUNT {json}` line.
 *
 * @example
 * ```ts
 * const script = mountVolumeScript({ volumeId: "vol-0123456789abcdef0", mountPoint: "/mnt/data" });
 * ```
 */
export function mountVolumeScript(options: Omit<MountVolumeOptions, "signal" | "env">): string {
  const volumeId = validateVolumeId(options.volumeId);
  const mountPoint = checkMachinePath("mountPoint", options.mountPoint);
  const fsType = options.fsType ?? "ext4";
  if (fsType !== "ext4" && fsType !== "xfs") throw new RunctlError("INVALID_ARGUMENT", `fsType must be "ext4" or "xfs", got ${JSON.stringify(fsType)}.`);
  const device = validateDeviceName(options.device ?? "/dev/sdf");
  const [xenA, xenB] = xenNames(device);
  const waitMs = options.deviceWaitMs ?? 120_000;
  if (!Number.isFinite(waitMs) || waitMs < 0) throw new RunctlError("INVALID_ARGUMENT", `deviceWaitMs must be a finite number >= 0, got ${String(waitMs)}.`);
  const owner = options.owner;
  if (owner !== undefined && !/^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$/.test(owner)) {
    throw new RunctlError("INVALID_ARGUMENT", `owner must be a user name or user:group, got ${JSON.stringify(owner)}.`);
  }
  const serial = `vol${volumeId.slice("vol-".length)}`;
  return `${PRELUDE}VOL=${shellQuote(serial)}
MP=${shellQuote(mountPoint)}
FS=${shellQuote(fsType)}
XEN_A=${shellQuote(xenA)}
XEN_B=${shellQuote(xenB)}
OWNER=${shellQuote(owner ?? "")}
WAIT_S=${Math.ceil(waitMs / 1000)}
BYID="\${RUNCTL_EBS_BYID_DIR:-/dev/disk/by-id}"
SYSBLOCK="\${RUNCTL_EBS_SYS_BLOCK_DIR:-/sys/block}"
DEVDIR="\${RUNCTL_EBS_DEV_DIR:-/dev}"

find_device() {
  # Nitro: udev's stable link, named after the NVMe serial (the volume id without its dash).
  for c in "$BYID/nvme-Amazon_Elastic_Block_Store_$VOL" "$BYID/nvme-Amazon_Elastic_Block_Store_\${VOL}_1"; do
    if [ -e "$c" ]; then readlink -f "$c"; return 0; fi
  done
  # Nitro without the udev rule: the controller's serial in sysfs.
  for s in "$SYSBLOCK"/nvme*/device/serial; do
    [ -r "$s" ] || continue
    if [ "$(tr -d ' \\n' < "$s")" = "$VOL" ]; then
      n=\${s%/device/serial}; n=\${n##*/}
      if [ -e "$DEVDIR/$n" ]; then readlink -f "$DEVDIR/$n"; return 0; fi
    fi
  done
  # Xen: no serials; the kernel names the attach device sdX as xvdX.
  for x in "$XEN_A" "$XEN_B"; do
    if [ -b "$x" ]; then readlink -f "$x"; return 0; fi
  done
  return 1
}

i=0
while :; do
  DEV=$(find_device) && [ -n "$DEV" ] && break
  [ "$i" -ge "$WAIT_S" ] && fail 10 "no block device for volume $VOL after \${WAIT_S}s (looked in $BYID, $SYSBLOCK/nvme*/device/serial, $XEN_A); is it attached to this instance?"
  sleep 1
  i=$((i + 1))
done
[ -b "$DEV" ] || fail 10 "$DEV is not a block device"
case "$DEV" in *[!A-Za-z0-9/_.:-]*) fail 15 "unexpected device name $DEV";; esac

report() {
  printf 'RUNCTL_EBS_MOUNT {"device":"%s","formatted":%s,"fsType":"%s","alreadyMounted":%s}\\n' "$DEV" "$1" "$2" "$3"
}

# Already mounted at the mount point? Same device: done. Another one: refuse.
if command -v findmnt >/dev/null 2>&1; then
  AT_MP=$(findmnt -rn -o SOURCE --mountpoint "$MP" 2>/dev/null | head -n 1)
  ELSEWHERE=$(findmnt -rn -o TARGET --source "$DEV" 2>/dev/null | grep -vxF "$MP" | head -n 1)
else
  AT_MP=$(awk -v mp="$MP" '$2 == mp { print $1; exit }' /proc/mounts)
  ELSEWHERE=$(awk -v d="$DEV" -v mp="$MP" '$1 == d && $2 != mp { print $2; exit }' /proc/mounts)
fi
if [ -n "$AT_MP" ]; then
  if [ "$(readlink -f "$AT_MP" 2>/dev/null || echo "$AT_MP")" = "$DEV" ]; then
    T=$(findmnt -rn -o FSTYPE --mountpoint "$MP" 2>/dev/null | head -n 1)
    case "$T" in *[!A-Za-z0-9_.-]*|"") T=unknown;; esac
    report false "$T" true
    exit 0
  fi
  fail 12 "$MP already has $AT_MP mounted"
fi
[ -z "$ELSEWHERE" ] || fail 12 "$DEV is already mounted at $ELSEWHERE"

command -v blkid >/dev/null 2>&1 || fail 16 "blkid is missing (install util-linux)"
PROBE=$($SUDO blkid -p -o export "$DEV" 2>/dev/null)
rc=$?
TYPE=""
PTTYPE=""
if [ "$rc" = 0 ]; then
  TYPE=$(printf '%s\\n' "$PROBE" | sed -n 's/^TYPE=//p' | head -n 1)
  PTTYPE=$(printf '%s\\n' "$PROBE" | sed -n 's/^PTTYPE=//p' | head -n 1)
elif [ "$rc" != 2 ]; then
  fail 15 "blkid -p $DEV failed (exit $rc)"
fi

FORMATTED=false
if [ -z "$TYPE" ]; then
  [ -z "$PTTYPE" ] || fail 11 "$DEV has a $PTTYPE partition table and no filesystem; refusing to format it"
  # blkid knows no filesystem here. Format only if the start of the device is really blank.
  NONZERO=$($SUDO head -c 1048576 "$DEV" | tr -d '\\000' | wc -c | tr -d ' ')
  [ "$NONZERO" = 0 ] || fail 11 "$DEV is not blank (unknown data in its first MiB); refusing to format it"
  command -v "mkfs.$FS" >/dev/null 2>&1 || fail 16 "mkfs.$FS is missing (install e2fsprogs or xfsprogs)"
  if [ "$FS" = ext4 ]; then
    $SUDO mkfs.ext4 -q -F -m 0 "$DEV" >&2 || fail 13 "mkfs.ext4 $DEV failed"
  else
    $SUDO mkfs.xfs -q "$DEV" >&2 || fail 13 "mkfs.xfs $DEV failed"
  fi
  TYPE=$FS
  FORMATTED=true
fi
case "$TYPE" in *[!A-Za-z0-9_.-]*) fail 15 "unexpected filesystem type $TYPE";; esac

$SUDO mkdir -p "$MP" || fail 14 "cannot create $MP"
$SUDO mount -t "$TYPE" -o noatime "$DEV" "$MP" >&2 || fail 14 "mount -t $TYPE $DEV $MP failed"
if [ -n "$OWNER" ]; then
  $SUDO chown "$OWNER" "$MP" || fail 14 "chown $OWNER $MP failed"
else
  $SUDO chown "$(id -u):$(id -g)" "$MP" || fail 14 "chown $MP failed"
fi
report "$FORMATTED" "$TYPE" false
`;
}

/**
 * Turns a failed script into a typed error: the script's exit codes map through {@link EBS_SCRIPT_EXIT}.
 *
 * @example
 * ```ts
 * if (result.exitCode !== 0) throw scriptFailure(result, transport.host, "mount vol-0123456789abcdef0");
 * ```
 */
export function scriptFailure(result: ExecResult, host: string, command: string): CommandError {
  const known = result.exitCode !== null ? EBS_SCRIPT_EXIT[result.exitCode] : undefined;
  const said = result.stderrTail
    .split("\n")
    .filter((l) => l.startsWith("runctl-ebs: "))
    .map((l) => l.slice("runctl-ebs: ".length))
    .pop();
  const failure = { command, host, exitCode: result.exitCode, signal: result.signal, durationMs: result.durationMs, stdoutTail: result.stdoutTail, stderrTail: result.stderrTail };
  if (!known) return new CommandError(failure);
  return new CommandError(failure, { code: known.code, message: `${command} on ${host}: ${said ?? known.what}.` });
}

/**
 * The JSON after `marker` on the last stdout line that starts with it.
 *
 * @example
 * ```ts
 * markedJson('x\nRUNCTL_EBS_MOUNT {"device":"/dev/nvme1n1"}\n', "RUNCTL_EBS_MOUNT"); // { device: "/dev/nvme1n1" }
 * ```
 */
export function markedJson(stdout: string, marker: string): Record<string, unknown> | undefined {
  const line = stdout
    .split("\n")
    .filter((l) => l.startsWith(`${marker} `))
    .pop();
  if (line === undefined) return undefined;
  try {
    const value: unknown = JSON.parse(line.slice(marker.length + 1));
    return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Mounts an attached EBS volume on the machine, with ONE POSIX sh script over the runctl
 * {@link Transport} (see `mountVolumeScript()`): finds the block device by volume id (NVMe
 * serial on Nitro, the attach name on Xen), waits for it, makes a filesystem only when the volume
 * is blank, mounts it (idempotent: already mounted there is fine) and gives the mount point to the
 * user. Uses `sudo -n` only when the transport is not root.
 *
 * @returns The device, whether it was formatted, the filesystem, and whether it was already mounted.
 * @throws RunctlError NOT_FOUND when the device never appears; RESOURCE_IN_USE when the volume holds
 *   unrecognised data (never formatted) or the mount point is taken; UNSUPPORTED when a tool is
 *   missing; COMMAND_FAILED for mkfs/mount failures; ABORTED.
 *
 * @example
 * ```ts
 * const { device, formatted } = await mountVolume(machine.transport, { volumeId: vol.volumeId, mountPoint: "/mnt/data" });
 * ```
 */
export async function mountVolume(transport: Transport, options: MountVolumeOptions): Promise<MountVolumeResult> {
  const script = mountVolumeScript(options);
  const mountPoint = checkMachinePath("mountPoint", options.mountPoint);
  const result = await transport.exec({ script }, { env: options.env, signal: options.signal });
  const what = `mount ${options.volumeId} at ${mountPoint}`;
  if (result.exitCode !== 0) throw scriptFailure(result, transport.host, what);
  const json = markedJson(result.stdout, "RUNCTL_EBS_MOUNT");
  if (!json || typeof json["device"] !== "string" || typeof json["formatted"] !== "boolean" || typeof json["fsType"] !== "string") {
    throw new RunctlError("COMMAND_FAILED", `${what} on ${transport.host} printed no result line.`, { details: { stdoutTail: result.stdoutTail, stderrTail: result.stderrTail } });
  }
  return { device: json["device"], formatted: json["formatted"], fsType: json["fsType"], mountPoint, alreadyMounted: json["alreadyMounted"] === true };
}

/**
 * Unmounts a mount point on the machine (before detaching its volume). Idempotent: nothing mounted
 * there is fine. RESOURCE_IN_USE when processes still use it.
 *
 * @example
 * ```ts
 * await unmountVolume(machine.transport, { mountPoint: "/mnt/data" });
 * await volumes.detach(vol.volumeId);
 * ```
 */
export async function unmountVolume(transport: Transport, options: UnmountVolumeOptions): Promise<{ readonly unmounted: boolean }> {
  const mountPoint = checkMachinePath("mountPoint", options.mountPoint);
  const script = `${PRELUDE}MP=${shellQuote(mountPoint)}
if command -v mountpoint >/dev/null 2>&1; then mountpoint -q "$MP" || { echo "RUNCTL_EBS_UMOUNT {\\"unmounted\\":false}"; exit 0; }
else awk -v mp="$MP" '$2 == mp { f = 1 } END { exit !f }' /proc/mounts || { echo "RUNCTL_EBS_UMOUNT {\\"unmounted\\":false}"; exit 0; }; fi
sync
$SUDO umount "$MP" >&2 || fail 12 "umount $MP failed (still in use?)"
echo "RUNCTL_EBS_UMOUNT {\\"unmounted\\":true}"
`;
  const result = await transport.exec({ script }, options.signal ? { signal: options.signal } : {});
  if (result.exitCode !== 0) throw scriptFailure(result, transport.host, `unmount ${mountPoint}`);
  return { unmounted: markedJson(result.stdout, "RUNCTL_EBS_UMOUNT")?.["unmounted"] === true };
}
