import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { buildRemoteCommand, describeCommand } from "../../src/transport/ssh/remote-command.js";

const dir = mkdtempSync(join(tmpdir(), "runctl-remote-command-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs a built line the way sshd does: `$SHELL -c LINE`. */
const run = (shell: string, line: string): string => execFileSync(shell, ["-c", line], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin" },
  });

describe("buildRemoteCommand", () => {
  it("builds a readable line", () => {
    expect(buildRemoteCommand(["python3", "train.py"], { cwd: "/srv/run", env: { LR: "0.1" } })).toBe("cd /srv/run && export LR=0.1 && exec python3 train.py");
    expect(buildRemoteCommand({ script: "echo hi" })).toBe("exec sh -c 'echo hi'");
  });

  for (const shell of ["/bin/sh", "/bin/bash"]) {
    it(`runs argv with cwd and env exactly under ${shell}`, () => {
      const sub = join(dir, "a b", "it's");
      execFileSync("mkdir", ["-p", sub]);
      const env = { A: "x'y \"z\" $HOME `id`;\nnext", B: "" };
      const line = buildRemoteCommand(["python3", "-c", "import os, sys, json; print(json.dumps([os.getcwd(), os.environ['A'], os.environ['B'], sys.argv[1:]]))", "$x", "a b", ""], { cwd: sub, env });
      expect(JSON.parse(run(shell, line))).toEqual([sub, env.A, "", ["$x", "a b", ""]]);
    });
  }

  it("rejects bad variable names, empty argv, empty cwd and NUL bytes", () => {
    for (const bad of ["A-B", "1A", "", "A B", "A=B"]) expect(() => buildRemoteCommand(["true"], { env: { [bad]: "x" } })).toThrow(/Invalid environment variable/);
    expect(() => buildRemoteCommand([])).toThrow(/non-empty/);
    expect(() => buildRemoteCommand(["true"], { cwd: "" })).toThrow(/cwd/);
    expect(() => buildRemoteCommand(["a\0b"])).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
  });

  it("describes commands for messages", () => {
    expect(describeCommand(["echo", "a b"])).toBe("echo 'a b'");
    expect(describeCommand({ script: "ls | wc -l" })).toBe("ls | wc -l");
  });
});
