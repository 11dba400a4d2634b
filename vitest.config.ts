import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

export default defineConfig({
  resolve: {
    alias: [
      { find: /^runctl\/aws$/, replacement: fileURLToPath(new URL("./src/aws-entry.ts", import.meta.url)) },
      { find: /^runctl$/, replacement: fileURLToPath(new URL("./src/index.ts", import.meta.url)) },
    ],
  },
  test: {
    include: ["test/**/*.test.ts", "src/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    pool: "forks",
    // Network safety: the AWS SDK's default credential chain would ask the instance metadata service
    // (169.254.169.254) when no credentials are set; tests never reach outside this machine.
    env: { AWS_EC2_METADATA_DISABLED: "true" },
    globalSetup: ["./test/support/system-packages.setup.ts", "./test/testbed/global-setup.ts"],
    reporters: ["default", "./test/support/summary-reporter.ts"],
  },
});
