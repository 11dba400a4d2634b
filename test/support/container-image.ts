/**
 * The offline container image the container tests run: `runctl-test/python:3`, a Debian bookworm
 * minbase root filesystem with python3 and python3-venv (venvs for `.setup({ requirements })` in the image), made by debootstrap (no registry, no Docker Hub) and imported
 * into each test daemon with `docker import`.
 *
 * The root filesystem is built once per machine and kept as a tarball in the cache folder
 * (RUNCTL_TEST_CACHE_DIR, default /var/cache/runctl-test), keyed by {@link TEST_IMAGE_CACHE_KEY}; a lock
 * file makes parallel test files wait for one build instead of running debootstrap twice. The build
 * (about 1 min on two cores, downloading about 40 MB from the machine's Debian mirror) is a setup
 * step like apt-get, not test traffic; later runs only import the tarball (2-4 s a daemon).
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { sh } from "../testbed/sys.js";
import { dockerCli } from "./docker.js";
import { withFileLock } from "./file-lock.js";

/** The image reference the tests use. */
export const TEST_IMAGE = "runctl-test/python:3";

/** Version of the cached tarball: change it when the recipe below changes. */
export const TEST_IMAGE_CACHE_KEY = "bookworm-minbase-python3-venv-v2";

const SUITE = "bookworm";
const FALLBACK_MIRROR = "http://deb.debian.org/debian";
const BUILD_TIMEOUT_MS = 15 * 60_000;

/** The cache folder for built image tarballs. */
export function testCacheDir(): string {
  return process.env["RUNCTL_TEST_CACHE_DIR"] ?? "/var/cache/runctl-test";
}

/**
 * The Debian mirror this machine's apt uses: the first `deb` source with a base suite (not
 * `-security`/`-updates`), from deb822 `debian.sources` or one-line `sources.list`; else deb.debian.org.
 */
export function debianMirror(): string {
  const base = (suite: string): boolean => !suite.includes("-") && !suite.includes("/");
  const deb822 = "/etc/apt/sources.list.d/debian.sources";
  if (existsSync(deb822)) {
    for (const block of readFileSync(deb822, "utf8").split(/\n\s*\n/)) {
      const field = (name: string): string[] => new RegExp(`^${name}:\\s*(.*)$`, "mi").exec(block)?.[1]?.trim().split(/\s+/) ?? [];
      const uri = field("URIs")[0];
      if (uri && field("Types").includes("deb") && field("Suites").some(base)) return uri;
    }
  }
  const list = "/etc/apt/sources.list";
  if (existsSync(list)) {
    for (const line of readFileSync(list, "utf8").split("\n")) {
      const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line.trim());
      if (m && base(m[2]!)) return m[1]!;
    }
  }
  return FALLBACK_MIRROR;
}

/**
 * Path of the cached image tarball, building it first when missing (debootstrap, ~1 min, once per
 * machine and {@link TEST_IMAGE_CACHE_KEY}). Safe to call from parallel processes. Needs root.
 */
export async function testImageTarball(log: (m: string) => void = () => {}): Promise<string> {
  const dir = testCacheDir();
  const tarball = join(dir, `${TEST_IMAGE_CACHE_KEY}.tar`);
  if (existsSync(tarball)) return tarball;
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  return withFileLock(join(dir, `${TEST_IMAGE_CACHE_KEY}.lock`), BUILD_TIMEOUT_MS, async () => {
    if (existsSync(tarball)) return tarball; // built by whoever held the lock before us
    const work = join(dir, `${TEST_IMAGE_CACHE_KEY}.build-${process.pid}`);
    rmSync(work, { recursive: true, force: true });
    const rootfs = join(work, "rootfs");
    mkdirSync(rootfs, { recursive: true });
    try {
      const mirror = debianMirror();
      log(`debootstrap ${SUITE} from ${mirror} (about a minute)`);
      const started = Date.now();
      const r = await sh("debootstrap", ["--variant=minbase", "--include=python3,python3-venv", SUITE, rootfs, mirror], { allowFail: true, timeoutMs: BUILD_TIMEOUT_MS });
      if (r.code !== 0) {
        const logFile = join(rootfs, "debootstrap", "debootstrap.log");
        const tail = existsSync(logFile) ? readFileSync(logFile, "utf8").slice(-2000) : "";
        throw new Error(`debootstrap failed (${r.code}): ${r.stderr.slice(-2000)}\n${tail}`);
      }
      // Package caches are a third of the tree and useless in a container.
      await sh("sh", ["-c", 'rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/* "$1"/var/log/*.log', "sh", rootfs]);
      const partial = join(work, "image.tar");
      await sh("tar", ["--numeric-owner", "-C", rootfs, "-cf", partial, "."], { timeoutMs: BUILD_TIMEOUT_MS });
      renameSync(partial, tarball);
      log(`test image tarball built in ${Date.now() - started} ms: ${tarball}`);
      return tarball;
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
}

/**
 * Makes sure the daemon at `dockerHost` (`unix:///…/docker.sock`) has {@link TEST_IMAGE}: imports the
 * cached tarball (building it first if needed) unless the image is already there. Returns the image
 * reference. The image's default command is `python3`; it has no `ip`, `ps` or shell tools beyond
 * `sh` and coreutils (minbase), so read /proc from python when a test needs facts from inside.
 *
 * @example
 * ```ts
 * const image = await ensureTestImage(daemon.host); // "runctl-test/python:3"
 * ```
 */
export async function ensureTestImage(dockerHost: string, log: (m: string) => void = () => {}): Promise<string> {
  const cli = dockerCli();
  const have = await sh(cli, ["-H", dockerHost, "image", "inspect", "--format", "{{.Id}}", TEST_IMAGE], { allowFail: true });
  if (have.code === 0) return TEST_IMAGE;
  const tarball = await testImageTarball(log);
  await sh(cli, ["-H", dockerHost, "import", "-c", 'CMD ["python3"]', tarball, TEST_IMAGE], { timeoutMs: 300_000 });
  return TEST_IMAGE;
}
