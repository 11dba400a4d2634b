import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, rmSync, writeFileSync } from "node:fs";

/**
 * vitest globalSetup: the Debian packages the end-to-end tests train with (a real PyTorch model on
 * scikit-learn's digits; wheels built offline) and that machines use to reach S3 (boto3, the aws
 * CLI). Installed when missing, so `npm test` alone works on a fresh machine (as root). The SSH
 * testbed installs its own packages; its hosts share this filesystem, so they see these too.
 * The container tests need docker.io (dockerd, containerd, runc, tini for `--init`) and debootstrap
 * (the offline test image, test/support/container-image.ts); they start private daemons only
 * (test/support/docker.ts), so policy-rc.d keeps the packages from starting the system dockerd.
 * The Slurm tests need slurmctld, slurmd, slurm-client and munge (Debian's Slurm 22.05); they start a
 * private munged and cluster per test file (test/support/slurm.ts), never the system services.
 */
const PACKAGES = [
  ...["python3-venv", "python3-pip", "python3-torch", "python3-sklearn", "python3-setuptools", "python3-wheel", "python3-boto3", "awscli"],
  ...["docker.io", "debootstrap", "e2fsprogs"],
  ...["slurmctld", "slurmd", "slurm-client", "munge"],
];

export default function setup(): void {
  const missing = PACKAGES.filter((p) => {
    const r = spawnSync("dpkg-query", ["-W", "-f", "${db:Status-Status}", p], { encoding: "utf8" });
    return r.stdout.trim() !== "installed";
  });
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) {
    throw new Error(`The end-to-end tests need these Debian packages: ${missing.join(" ")}. Install them (apt-get install -y ${missing.join(" ")}) or run the tests as root.`);
  }
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const install = (): void => void execFileSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...missing], { env, stdio: "inherit" });
  // Keep package scripts from starting system services (dockerd, containerd, munged, slurmctld, slurmd).
  const policy = "/usr/sbin/policy-rc.d";
  const addedPolicy = !existsSync(policy);
  if (addedPolicy) writeFileSync(policy, "#!/bin/sh\nexit 101\n", { mode: 0o755 });
  try {
    install();
  } catch {
    execFileSync("apt-get", ["update", "-qq"], { env, stdio: "inherit" });
    install();
  } finally {
    if (addedPolicy) rmSync(policy, { force: true });
  }
}
