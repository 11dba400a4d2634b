import { rmSync } from "node:fs";
import { defineConfig } from "tsup";

/** Where the bin's chunks go (see the second build); the first build's clean leaves them alone. */
const CLI_CHUNKS = "cli-chunks";

export default defineConfig([
  {
    // Subpath entries (package.json "exports"): `runctl` (core, local, SSH, folders), `runctl/aws` and
    // `runctl/s3` (S3 storage alone: loads the S3 client, not EC2's, SSM's or ssh2).
    // Shared code goes to chunks both entries import, so there is one RunctlError class; the core
    // reaches S3 only through a dynamic import(), so loading `runctl` never loads the AWS SDK.
    // ESM only: Node >= 22 loads it with require() too (decision 0019).
    entry: { index: "src/index.ts", aws: "src/aws-entry.ts", s3: "src/s3-entry.ts" },
    format: ["esm"],
    dts: { compilerOptions: { paths: {} } },
    tsconfig: "tsconfig.build.json",
    sourcemap: true,
    // Both builds write dist/ at once: this one's clean must leave the CLI's files alone.
    clean: ["!cli.js", "!cli.js.map", `!${CLI_CHUNKS}/**`],
    target: "node22",
    platform: "node",
    shims: true,
    splitting: true,
    treeshake: true,
  },
  {
    // The `runctl` bin (package.json "bin"): ESM only, shebang kept (tsup also makes it executable).
    entry: { cli: "src/cli/cli-main.ts" },
    format: ["esm"],
    dts: false,
    tsconfig: "tsconfig.build.json",
    sourcemap: true,
    clean: false,
    target: "node22",
    platform: "node",
    // Each command and the AWS SDK are dynamic imports, split into chunks that load on first use, so
    // `runctl --version` loads one small file (bench/startup.ts). The chunks have a folder of their
    // own, which this build empties first (the first build's clean must not touch it).
    splitting: true,
    esbuildOptions(options) {
      options.chunkNames = `${CLI_CHUNKS}/[name]-[hash]`;
    },
    esbuildPlugins: [{ name: "empty-cli-chunks", setup: (build) => build.onStart(() => rmSync(`dist/${CLI_CHUNKS}`, { recursive: true, force: true })) }],
    treeshake: true,
    // Loaded only for `runctl plan FILE.ts`, from the user's own install.
    external: ["tsx", "tsx/esm/api"],
  },
]);
