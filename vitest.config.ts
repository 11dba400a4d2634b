import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

/**
 * Three tiers, one vitest run (`npm test` runs all three, so the summary line covers them all):
 * - unit: in-process tests and short local processes (sh, s3rver from npm); no root, no testbed, no
 *   apt packages; under a minute on two cores (`npm run test:unit`).
 * - integration: real Python agent processes and local runs in temp folders with a stock python3; no
 *   root, no testbed, no apt packages, but minutes long (`npm run test:integration`).
 * - e2e: the SSH testbed (network namespaces, as root), the Debian packages (torch, sklearn, venv,
 *   boto3, the aws CLI) and the built package in dist/ (`npm run test:e2e`).
 * Only the e2e tier has the globalSetups that install packages and start the testbed.
 */
export default defineConfig({
  resolve: {
    alias: [
      { find: /^runctl\/aws$/, replacement: fileURLToPath(new URL("./src/aws-entry.ts", import.meta.url)) },
      { find: /^runctl\/s3$/, replacement: fileURLToPath(new URL("./src/s3-entry.ts", import.meta.url)) },
      { find: /^runctl$/, replacement: fileURLToPath(new URL("./src/index.ts", import.meta.url)) },
    ],
  },
  test: {
    testTimeout: 120_000,
    hookTimeout: 180_000,
    pool: "forks",
    // Network safety: the AWS SDK's default credential chain would ask the instance metadata service
    // (169.254.169.254) when no credentials are set; tests never reach outside this machine.
    env: { AWS_EC2_METADATA_DISABLED: "true" },
    // Removes each test file's temporary folders after its last test.
    setupFiles: ["./test/support/temp-cleanup.setup.ts"],
    reporters: ["default", "./test/support/summary-reporter.ts"],
    projects: [
      { extends: true, test: { name: "unit", include: ["test/unit/**/*.test.ts", "src/**/*.test.ts"] } },
      { extends: true, test: { name: "integration", include: ["test/integration/**/*.test.ts"] } },
      {
        extends: true,
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts", "test/testbed/**/*.test.ts"],
          globalSetup: ["./test/support/system-packages.setup.ts", "./test/testbed/global-setup.ts"],
        },
      },
    ],
  },
});
