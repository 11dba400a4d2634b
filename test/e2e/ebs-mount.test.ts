/**
 * mountVolume and prewarmVolume for real, through runctl's local transport, as root: a loop device
 * stands in for the EBS volume and a fake /dev/disk/by-id folder holds the NVMe link EC2's udev rule
 * would make (`nvme-Amazon_Elastic_Block_Store_vol<hex>`). The first mount formats, the second must
 * not; a device with unknown data is never formatted; pre-warm copies from a real S3-protocol server
 * (s3rver) with the AWS CLI and is checked byte for byte on the mounted filesystem.
 */
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, rmSync, symlinkSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mountVolume, prewarmVolume, unmountVolume } from "../../src/providers/ec2/ebs/index.js";
import { s3 } from "../../src/storage/s3/index.js";
import { localTransport } from "../../src/transport/local/index.js";
import { caught } from "../support/caught.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../support/s3-server.js";
import { tempDir } from "../support/temp-home.js";

const VOL = "vol-0123456789abcdef0";
const OTHER_VOL = "vol-0fedcba9876543210";
const BUCKET = "runctl-ebs-e2e";
const AWS_CLI = "/usr/bin/aws";
const MiB = 1024 * 1024;

const transport = localTransport();
const dir = tempDir("ebs-mount");
const byId = join(dir, "by-id");
const emptyById = join(dir, "by-id-empty");
const sysBlock = join(dir, "sys-block");
const devDir = join(dir, "dev");
const mnt = join(dir, "mnt");
const loops: string[] = [];
let server: TestS3Server | undefined;

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8" }).trim();
}

/** A loop device over a sparse file of `sizeMiB`. */
function loopDevice(name: string, sizeMiB: number): string {
  const file = join(dir, `${name}.img`);
  execFileSync("truncate", ["-s", `${sizeMiB}M`, file]);
  const dev = sh("losetup", ["--find", "--show", file]);
  loops.push(dev);
  return dev;
}

function isMounted(path: string): boolean {
  try {
    execFileSync("mountpoint", ["-q", path]);
    return true;
  } catch {
    return false;
  }
}

/** The env that points the script's device lookup at the fake folders. */
const fakeEnv = (over: Record<string, string> = {}): Record<string, string> => ({ RUNCTL_EBS_BYID_DIR: byId, RUNCTL_EBS_SYS_BLOCK_DIR: sysBlock, RUNCTL_EBS_DEV_DIR: devDir, ...over });

let dev: string;

beforeAll(async () => {
  expect(process.getuid?.()).toBe(0); // loop devices and mount need root; the suite runs as root
  for (const d of [byId, emptyById, sysBlock, devDir, mnt]) mkdirSync(d, { recursive: true });
  dev = loopDevice("volume", 256);
  symlinkSync(dev, join(byId, `nvme-Amazon_Elastic_Block_Store_vol${VOL.slice(4)}`));
  server = await startS3Server({ buckets: [BUCKET] });
});

afterAll(async () => {
  // Always leave the machine as it was: unmount, free the loop devices, remove the files.
  for (let i = 0; i < 3 && isMounted(mnt); i++) {
    try {
      execFileSync("umount", [mnt]);
    } catch {
      execFileSync("umount", ["-l", mnt], { stdio: "ignore" });
    }
  }
  for (const l of loops) {
    try {
      execFileSync("losetup", ["-d", l]);
    } catch {
      // already detached
    }
  }
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("mountVolume on a real block device", () => {
  it("formats a blank volume once, and never again", async () => {
    const first = await mountVolume(transport, { volumeId: VOL, mountPoint: mnt, env: fakeEnv(), deviceWaitMs: 5_000 });
    expect(first).toEqual({ device: dev, formatted: true, fsType: "ext4", mountPoint: mnt, alreadyMounted: false });
    expect(isMounted(mnt)).toBe(true);
    expect(sh("blkid", ["-o", "value", "-s", "TYPE", dev])).toBe("ext4");
    writeFileSync(join(mnt, "keep.txt"), "data that must survive\n");

    // Mounting again while mounted there: nothing to do.
    const again = await mountVolume(transport, { volumeId: VOL, mountPoint: mnt, env: fakeEnv() });
    expect(again).toMatchObject({ device: dev, formatted: false, fsType: "ext4", alreadyMounted: true });

    expect(await unmountVolume(transport, { mountPoint: mnt })).toEqual({ unmounted: true });
    expect(isMounted(mnt)).toBe(false);
    expect(await unmountVolume(transport, { mountPoint: mnt })).toEqual({ unmounted: false });

    const second = await mountVolume(transport, { volumeId: VOL, mountPoint: mnt, env: fakeEnv() });
    expect(second).toEqual({ device: dev, formatted: false, fsType: "ext4", mountPoint: mnt, alreadyMounted: false });
    expect(readFileSync(join(mnt, "keep.txt"), "utf8")).toBe("data that must survive\n");
  });

  it("finds the device by its NVMe serial in sysfs when there is no by-id link", async () => {
    await unmountVolume(transport, { mountPoint: mnt });
    // What a Nitro instance without the udev rule has: /sys/block/nvme1n1/device/serial = vol<hex>.
    mkdirSync(join(sysBlock, "nvme1n1", "device"), { recursive: true });
    writeFileSync(join(sysBlock, "nvme1n1", "device", "serial"), `vol${OTHER_VOL.slice(4)}          \n`);
    symlinkSync(dev, join(devDir, "nvme1n1"));
    const r = await mountVolume(transport, { volumeId: OTHER_VOL, mountPoint: mnt, env: fakeEnv({ RUNCTL_EBS_BYID_DIR: emptyById }) });
    expect(r).toMatchObject({ device: dev, formatted: false, fsType: "ext4" });
    expect(readFileSync(join(mnt, "keep.txt"), "utf8")).toBe("data that must survive\n");
  });

  it("refuses to format a device with unknown data, and a mount point that holds another device", async () => {
    const junk = loopDevice("junk", 16);
    const bytes = randomBytes(4096);
    const fd = openSync(junk, "r+");
    writeSync(fd, bytes, 0, bytes.length, 8192);
    closeSync(fd);
    const junkId = "vol-0aaaaaaaaaaaaaaaa";
    symlinkSync(junk, join(byId, `nvme-Amazon_Elastic_Block_Store_vol${junkId.slice(4)}`));

    const busy = await caught(mountVolume(transport, { volumeId: junkId, mountPoint: mnt, env: fakeEnv() }));
    expect(busy.code).toBe("RESOURCE_IN_USE");
    expect(busy.message).toMatch(/already has .* mounted/);

    const other = join(dir, "mnt-junk");
    const err = await caught(mountVolume(transport, { volumeId: junkId, mountPoint: other, env: fakeEnv() }));
    expect(err.code).toBe("RESOURCE_IN_USE");
    expect(err.message).toMatch(/not blank/);
    expect(isMounted(other)).toBe(false);
    const after = Buffer.alloc(4096);
    const rfd = openSync(junk, "r");
    readSync(rfd, after, 0, 4096, 8192);
    closeSync(rfd);
    expect(after.equals(bytes)).toBe(true);
  });

  it("NOT_FOUND when the device never appears", async () => {
    const err = await caught(mountVolume(transport, { volumeId: "vol-0bbbbbbbbbbbbbbbb", mountPoint: join(dir, "never"), env: fakeEnv({ RUNCTL_EBS_BYID_DIR: emptyById, RUNCTL_EBS_SYS_BLOCK_DIR: emptyById }), device: "/dev/sdz", deviceWaitMs: 1_000 }));
    expect(err.code).toBe("NOT_FOUND");
    expect(err.message).toMatch(/no block device for volume vol0bbbbbbbbbbbbbbbb/);
  });
});

describe("prewarmVolume from S3 into the mounted volume", () => {
  const files: Record<string, Buffer> = {
    "train/images.bin": randomBytes(3 * MiB + 17),
    "train/labels.txt": Buffer.from("1\n2\n3\n"),
    "test/with space's name.txt": Buffer.from("odd names travel too\n"),
    "README": Buffer.from("mnist subset\n"),
    "empty.txt": Buffer.alloc(0),
  };

  it("copies every object under the prefix and verifies them on the machine", async () => {
    expect(isMounted(mnt)).toBe(true);
    const store = s3(`s3://${BUCKET}/datasets`, { endpoint: server!.endpoint, ...S3RVER_CLIENT_SETTINGS, credentials: TEST_AWS_CREDENTIALS });
    for (const [key, body] of Object.entries(files)) await store.put(`mnist/${key}`, body);
    await store.put("mnist2/not-this.txt", "outside the prefix");

    const r = await prewarmVolume(transport, {
      source: `s3://${BUCKET}/datasets/mnist`,
      mountPoint: mnt,
      to: "mnist",
      endpoint: server!.endpoint,
      region: "us-east-1",
      awsCli: AWS_CLI,
      credentials: TEST_AWS_CREDENTIALS,
      env: { AWS_EC2_METADATA_DISABLED: "true" },
    });
    const total = Object.values(files).reduce((n, b) => n + b.length, 0);
    expect(r).toMatchObject({ files: Object.keys(files).length, bytes: total, path: `${mnt}/mnist` });
    for (const [key, body] of Object.entries(files)) {
      const onVolume = readFileSync(join(mnt, "mnist", key));
      expect(createHash("sha256").update(onVolume).digest("hex"), key).toBe(createHash("sha256").update(body).digest("hex"));
    }
    expect(existsSync(join(mnt, "mnist", "..", "mnist2"))).toBe(false);
    expect(existsSync(join(mnt, "not-this.txt"))).toBe(false);

    // The files are on the filesystem of the volume, not just in the folder: they survive a remount.
    await unmountVolume(transport, { mountPoint: mnt });
    expect(existsSync(join(mnt, "mnist"))).toBe(false);
    await mountVolume(transport, { volumeId: VOL, mountPoint: mnt, env: fakeEnv() });
    expect(readFileSync(join(mnt, "mnist", "train", "images.bin")).equals(files["train/images.bin"]!)).toBe(true);
  });

  it("does not trust the copy's exit status: a sync that copies nothing fails the check", async () => {
    // A fake CLI whose `s3 ls` lists two objects and whose `s3 sync` "succeeds" without copying one.
    const fake = join(dir, "fake-aws");
    writeFileSync(
      fake,
      `#!/bin/sh
case "$2" in
  ls) printf '2026-11-21 10:00:00         12 data/a.txt\\n2026-11-21 10:00:00          5 data/b.txt\\n' ;;
  sync) mkdir -p "$4" && printf 'hello world\\n' > "$4/a.txt" ;;
esac
exit 0
`,
      { mode: 0o755 },
    );
    const err = await caught(prewarmVolume(transport, { source: "s3://any-bucket/data", mountPoint: mnt, to: "fake", awsCli: fake }));
    expect(err.code).toBe("COMMAND_FAILED");
    expect(err.message).toMatch(/missing or incomplete/);
    expect(err.details["stderrTail"]).toMatch(/missing on the volume: b.txt/);
  });

  it("fails with COMMAND_FAILED for a missing bucket, and NOT_FOUND for a missing mount point", async () => {
    const err = await caught(
      prewarmVolume(transport, { source: "s3://no-such-bucket-here/x", mountPoint: mnt, to: "x", endpoint: server!.endpoint, region: "us-east-1", awsCli: AWS_CLI, credentials: TEST_AWS_CREDENTIALS }),
    );
    expect(err.code).toBe("COMMAND_FAILED");
    const gone = await caught(prewarmVolume(transport, { source: `s3://${BUCKET}/datasets/mnist`, mountPoint: join(dir, "nowhere"), endpoint: server!.endpoint, awsCli: AWS_CLI, credentials: TEST_AWS_CREDENTIALS }));
    expect(gone.code).toBe("NOT_FOUND");
  });
});
