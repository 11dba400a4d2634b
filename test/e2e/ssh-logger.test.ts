/**
 * The logger option over SSH (issue 16, item 7): `sshHosts(host, { logger })` receives the SSH
 * connect, every command with its exit code, the pool's lease and release and the agent's lines,
 * and never the value of a variable the run declares with `.env()` nor the private key's contents.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runctl, sshHosts, type LogEntry, type SshHost } from "runctl";
import { leaseOneHost } from "../support/ssh-hosts.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("e2e-ssh-logger");
const SECRET = "wandb_ssh_logger_secret_3e9a";
let host: SshHost;
let release: (() => Promise<void>) | undefined;

beforeAll(async () => ({ host, release } = await leaseOneHost()));
afterAll(() => release?.());

describe("the logger on an SSH host", () => {
  it("gets connects, commands, lease and release, and the agent's lines; never a secret", async () => {
    const code = tempDir("ssh-logger-code");
    writeFileSync(join(code, "train.py"), "import os\nprint('HAS_TOKEN', len(os.environ['WANDB_API_KEY']), flush=True)\n");
    const entries: LogEntry[] = [];
    const lines: string[] = [];
    const keep = (line: string, entry: LogEntry): void => {
      lines.push(line);
      entries.push(entry);
    };
    const run = Runctl.instance(sshHosts(host, { logger: { debug: keep, info: keep } }))
      .sync(code)
      .env({ WANDB_API_KEY: SECRET })
      .train("train.py");
    const result = await run;
    expect(result.status, JSON.stringify(result.error)).toBe("succeeded");

    expect(lines.some((l) => /^\[runctl transport\] ssh .*: connected in \d+ ms$/.test(l))).toBe(true);
    expect(lines.some((l) => l.startsWith("[runctl transport] ") && l.includes(": exec ") && l.includes(" launch "))).toBe(true);
    expect(lines.some((l) => /^\[runctl transport\] .*: exit 0 in \d+ ms: /.test(l))).toBe(true);
    expect(lines.some((l) => l.startsWith("[runctl provider] leased "))).toBe(true);
    expect(lines.some((l) => l.startsWith("[runctl provider] released "))).toBe(true);
    expect(lines.some((l) => l.startsWith("[runctl agent] "))).toBe(true);
    const all = JSON.stringify([lines, entries]);
    expect(all).not.toContain(SECRET);
    if (host.privateKeyPath) {
      const key = readFileSync(host.privateKeyPath, "utf8").split("\n").filter((l) => l.length > 20 && !l.startsWith("-----"));
      for (const keyLine of key) expect(all).not.toContain(keyLine);
    }
  });
});
