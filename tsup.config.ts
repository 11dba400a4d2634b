import { defineConfig } from "tsup";

export default defineConfig({
  entry: ["src/index.ts"],
  format: ["esm", "cjs"],
  dts: { compilerOptions: { paths: {} } },
  tsconfig: "tsconfig.build.json",
  sourcemap: true,
  clean: true,
  target: "node20",
  platform: "node",
  shims: true,
  splitting: false,
  treeshake: true,
});
