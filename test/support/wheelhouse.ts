import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "./temp-home.js";

/**
 * Builds a real wheel of a tiny package, `runctl-demo-pkg` (module `runctl_demo_pkg` with `VERSION`
 * and `greet(name)`), into `wheelhouse`. Offline: no index, no build isolation, with Debian's
 * /usr/bin/python3, which has `wheel` (the pyenv python3 does not). Returns the wheel's file name.
 */
export function buildDemoWheel(version: string, wheelhouse: string): string {
  const src = tempDir("demo-pkg");
  mkdirSync(join(src, "runctl_demo_pkg"));
  writeFileSync(join(src, "runctl_demo_pkg", "__init__.py"), `VERSION = "${version}"\ndef greet(name):\n    return "hello " + name\n`);
  writeFileSync(join(src, "setup.py"), `from setuptools import setup\nsetup(name="runctl-demo-pkg", version="${version}", packages=["runctl_demo_pkg"])\n`);
  execFileSync("/usr/bin/python3", ["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheelhouse, src], { stdio: "pipe" });
  const wheels = readdirSync(wheelhouse).filter((f) => f.startsWith(`runctl_demo_pkg-${version}-`) && f.endsWith(".whl"));
  if (wheels.length !== 1) throw new Error(`expected one runctl_demo_pkg ${version} wheel in ${wheelhouse}, found ${wheels.join(", ") || "none"}`);
  return wheels[0]!;
}
