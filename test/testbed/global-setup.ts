/**
 * vitest globalSetup: starts the SSH testbed once per test run, hands its description to the tests
 * (`inject("runctlTestbed")`, typed in inject.ts) and tears it down at the end.
 *
 * Settings (environment): RUNCTL_TESTBED_HOSTS (default 4), RUNCTL_TESTBED_SUBNET_BASE (default 10.77),
 * RUNCTL_TESTBED_DIR (default <repo>/.runctl-testbed, or /var/tmp/runctl-testbed-<hash> when the repo
 * is under /tmp, which the hosts cannot see).
 */
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";
import { startTestbed, type TestbedInfo } from "./testbed.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** The SSH testbed started by test/testbed/global-setup.ts. */
    runctlTestbed: TestbedInfo;
  }
}

/** Starts the testbed and provides its description; returns the teardown. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const hosts = Number(process.env["RUNCTL_TESTBED_HOSTS"] ?? "4");
  const stateDir = process.env["RUNCTL_TESTBED_DIR"] ?? defaultStateDir();
  const started = Date.now();
  const bed = await startTestbed({ hosts, stateDir });
  if (process.env["RUNCTL_TESTBED_VERBOSE"]) console.log(`[testbed] ${hosts} hosts on ${bed.info.subnet} in ${Date.now() - started} ms`);
  project.provide("runctlTestbed", bed.toJSON());
  return async () => {
    await bed.stop();
  };
}

/** Next to the repo, unless the repo is under /tmp: each host has a private /tmp and would not see it. */
export function defaultStateDir(): string {
  const repo = fileURLToPath(new URL("../..", import.meta.url)).replace(/\/$/, "");
  if (repo !== "/tmp" && !repo.startsWith("/tmp/")) return `${repo}/.runctl-testbed`;
  return `/var/tmp/runctl-testbed-${createHash("sha256").update(repo).digest("hex").slice(0, 12)}`;
}
