import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { HyperparamValue, RunEvent, SshHost, SshTransport } from "runctl";
import { main as sshHostExample } from "../../examples/ssh-host.js";
import { leaseOneHost } from "../support/ssh-hosts.js";
import { useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("e2e-ssh-hyperparams");
let host: SshHost;
let inspector: SshTransport;
let release: (() => Promise<void>) | undefined;

beforeAll(async () => ({ host, inspector, release } = await leaseOneHost()));
afterAll(() => release?.());

describe("hyperparameters on an SSH host", () => {
  it("reach the remote trainer exactly, in argv and RUNCTL_HPARAMS: spaces, quotes, $, ;, newlines, lists, nested objects", async () => {
    // Everything a shell between client and trainer would mangle (the SSH exec is a shell string on the host).
    const hostile: Record<string, HyperparamValue> = {
      name: "it's a \"test\" with $HOME and `id`; rm -rf / && echo pwned",
      multiline: "line one\nline two\n\ttabbed",
      empty: "",
      dashes: "--lr",
      unicode: "naïve ☃ 学习",
      glob: "* ~ $(id) \\n \\\\ 'single' > /tmp/pwned",
      spaces: "  leading and trailing  ",
      layers: [64, 32, 16],
      nested: { optimizer: { name: "adam", betas: [0.9, 0.999] }, schedule: null, flags: [true, false] },
      long: "x".repeat(10_000),
    };
    const events: RunEvent[] = [];
    const { result, lines } = await sshHostExample({ host, verbose: false, hyperparams: { ...hostile, "echo-hparams": true, steps: 3 }, onEvent: (e) => events.push(e) });
    expect(result.status, JSON.stringify(result.error)).toBe("succeeded");
    expect(result.machine?.address).toBe(host.host);

    const echo = lines.filter((l) => l.startsWith("RUNCTL_HPARAMS_ECHO "));
    expect(echo).toHaveLength(1);
    const received = JSON.parse(echo[0]!.slice("RUNCTL_HPARAMS_ECHO ".length)) as { argv_list: string[]; env: Record<string, unknown> };
    // argv is exactly one `--key=value` element per hyperparameter: no value was split, merged or dropped on the way.
    const argv = received.argv_list;
    const pairs = new Map<string, string>();
    for (const [i, arg] of argv.entries()) {
      expect(arg.startsWith("--") && arg.includes("="), `argv[${i}] = ${JSON.stringify(arg)}`).toBe(true);
      pairs.set(arg.slice(2, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1));
    }
    expect(pairs.size).toBe(argv.length);
    for (const [key, value] of Object.entries(hostile)) {
      // argv: strings verbatim, everything else as JSON text; RUNCTL_HPARAMS: the JSON value itself.
      expect(pairs.get(key), key).toBe(typeof value === "string" ? value : JSON.stringify(value));
      expect(received.env[key], key).toEqual(value);
    }
    expect(pairs.get("echo-hparams")).toBe("true");
    expect(received.env["steps"]).toBe(3);
    // Nothing the strings could have run on the host did.
    expect(lines.some((l) => l.includes("pwned") && !l.startsWith("RUNCTL_HPARAMS_ECHO ") && !l.startsWith("HPARAMS "))).toBe(false);
    expect((await inspector.exec(["test", "-e", "/tmp/pwned"])).exitCode).toBe(1);
    expect(events.at(-1)).toMatchObject({ type: "exit", status: "succeeded", exitCode: 0 });
  });
});
