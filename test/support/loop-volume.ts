/**
 * A stand-in for an EBS volume: an ext4 filesystem in a sparse image file, on a loop device, mounted
 * inside a target's mount namespace (this machine's, or a test host's, where only that host and the
 * containers of its daemon see it). Needs root.
 *
 * With a "local" daemon (docker.ts), mount the volume before starting the daemon (it sees this
 * machine's mounts as they were at its start) and clean it up after stopping it (until then the
 * daemon's copy of the mount keeps the loop device attached).
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { sh } from "../testbed/sys.js";
import { shIn, type MachineTarget } from "./host-namespaces.js";

/** Folder for the image files (on disk, visible from every namespace). */
export const LOOP_IMAGE_ROOT = "/var/tmp/runctl-loops";

/** Options of {@link loopVolume}. */
export interface LoopVolumeOptions {
  /** Size of the filesystem. @defaultValue 64 */
  readonly sizeMiB?: number;
  /**
   * Owner of the filesystem's root folder, a user name or `uid:gid`. @defaultValue the test host's
   * user for a test host, root for "local"
   */
  readonly owner?: string;
  /** Where to mount it in the target's mount namespace. @defaultValue `/tmp/runctl-vol-<random>` (a test host's /tmp is its own) */
  readonly mountPoint?: string;
}

/** A mounted loop volume. */
export interface LoopVolume {
  /** Mount point inside the target's mount namespace. */
  readonly mountPoint: string;
  /** The loop device (`/dev/loopN`) while mounted. */
  readonly device: string;
  /** The backing image file, on this machine. */
  readonly imagePath: string;
  readonly target: MachineTarget;
  /** Unmounts (the loop device detaches itself), removes the mount point folder and the image. Idempotent. */
  cleanup(): Promise<void>;
}

/**
 * Makes and mounts a fresh ext4 volume of `sizeMiB` in `target`'s mount namespace, owned by `owner`.
 * The loop device is set to detach itself when unmounted, so a test host that is killed (its mount
 * namespace gone) leaks no loop device; only the image file is left for `cleanup()` to remove.
 *
 * @example
 * ```ts
 * const vol = await loopVolume(host, { sizeMiB: 64 });   // mounted at vol.mountPoint inside the host
 * // docker run -v ${vol.mountPoint}:/ckpt ...
 * await vol.cleanup();
 * ```
 */
export async function loopVolume(target: MachineTarget, options: LoopVolumeOptions = {}): Promise<LoopVolume> {
  const sizeMiB = options.sizeMiB ?? 64;
  if (!Number.isInteger(sizeMiB) || sizeMiB < 8) throw new RangeError(`sizeMiB must be an integer >= 8, got ${sizeMiB}`);
  const id = randomBytes(4).toString("hex");
  const owner = options.owner ?? (target === "local" ? "0:0" : target.user);
  const uidGid = /^\d+:\d+$/.test(owner)
    ? owner
    : `${(await sh("id", ["-u", owner])).stdout.trim()}:${(await sh("id", ["-g", owner])).stdout.trim()}`;
  const mountPoint = options.mountPoint ?? `/tmp/runctl-vol-${id}`;
  mkdirSync(LOOP_IMAGE_ROOT, { recursive: true, mode: 0o755 });
  const imagePath = join(LOOP_IMAGE_ROOT, `${id}.img`);
  await sh("truncate", ["-s", `${sizeMiB}M`, imagePath]);
  let device: string | undefined;
  try {
    await sh("mkfs.ext4", ["-q", "-F", "-E", `root_owner=${uidGid}`, imagePath]);
    device = (await sh("losetup", ["--find", "--show", imagePath])).stdout.trim();
    await shIn(target, 'mkdir -p "$1" && mount -t ext4 "$2" "$1"', [mountPoint, device]);
    // Detaching a mounted loop device only marks it to detach itself at the last unmount.
    await sh("losetup", ["-d", device]);
  } catch (e) {
    if (device !== undefined) await sh("losetup", ["-d", device], { allowFail: true });
    rmSync(imagePath, { force: true });
    throw e;
  }
  const dev = device;
  let done = false;
  return {
    mountPoint,
    device: dev,
    imagePath,
    target,
    cleanup: async () => {
      if (done) return;
      done = true;
      if (target === "local" || (await target.isAlive())) {
        // Lazy, so a container or shell still inside does not keep the test from finishing.
        await shIn(target, 'if mountpoint -q "$1"; then umount "$1" || umount -l "$1"; fi; rmdir "$1" 2>/dev/null || true', [mountPoint], { allowFail: true });
      }
      rmSync(imagePath, { force: true });
    },
  };
}
