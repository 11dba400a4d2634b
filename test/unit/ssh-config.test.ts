import { mkdirSync, writeFileSync } from "node:fs";
import { homedir, userInfo } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { isRunctlError } from "../../src/errors/runctl-error.js";
import { hostFromRecord, machineOf, parseHost } from "../../src/providers/ssh-hosts/ssh-hosts-provider.js";
import type { Transport } from "../../src/transport/types.js";
import { readSshConfigHost } from "../../src/transport/ssh/ssh-config.js";
import { expandSshTokens, hostPatternsMatch, parseSshConfigText } from "../../src/transport/ssh/ssh-config-parse.js";
import { jumpList, resolveSshRoute } from "../../src/transport/ssh/ssh-route.js";
import { tempDir } from "../support/temp-home.js";

/** A fresh home folder with `.ssh/` holding the given files; returns its path. */
function home(files: Record<string, string>): string {
  const dir = tempDir("ssh-config");
  mkdirSync(join(dir, ".ssh"), { recursive: true });
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(dir, ".ssh", name, ".."), { recursive: true });
    writeFileSync(join(dir, ".ssh", name), text);
  }
  return dir;
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (e) {
    expect(isRunctlError(e), String(e)).toBe(true);
    return (e as { code: string }).code;
  }
  throw new Error("expected a rejection");
}

describe("ssh_config parsing", () => {
  it("reads `Keyword value`, `Keyword=value`, `Keyword = value`, quotes, comments and any keyword case", () => {
    const text = [
      "# a comment",
      "",
      "   HOST gpu   # trailing comment",
      "\tHostName=10.0.0.5",
      "  user = ml",
      '  IdentityFile "/keys/my key" ',
      '  IdentityFile "/keys/q\\"uote"',
      "  Port\t2222",
      "  SomeFutureKeyword whatever",
    ].join("\r\n");
    expect(parseSshConfigText(text, "cfg").map((d) => [d.keyword, d.args, d.line])).toEqual([
      ["host", ["gpu"], 3],
      ["hostname", ["10.0.0.5"], 4],
      ["user", ["ml"], 5],
      ["identityfile", ["/keys/my key"], 6],
      ["identityfile", ['/keys/q"uote'], 7],
      ["port", ["2222"], 8],
      ["somefuturekeyword", ["whatever"], 9],
    ]);
  });

  it("refuses an unterminated quote and a keyword without a value, naming file and line", () => {
    for (const text of ['Host a\n  IdentityFile "/x', "Host a\n  HostName"]) {
      let err: unknown;
      try {
        parseSshConfigText(text, "/etc/cfg");
      } catch (e) {
        err = e;
      }
      expect(isRunctlError(err) && err.code).toBe("INVALID_ARGUMENT");
      expect((err as Error).message).toContain("/etc/cfg:2");
    }
  });

  it("matches Host patterns as OpenSSH: wildcards, case, negation wins", () => {
    expect(hostPatternsMatch(["*.lan"], "GPU1.lan")).toBe(true);
    expect(hostPatternsMatch(["gpu?"], "gpu7")).toBe(true);
    expect(hostPatternsMatch(["gpu?"], "gpu10")).toBe(false);
    expect(hostPatternsMatch(["*", "!bastion"], "bastion")).toBe(false);
    expect(hostPatternsMatch(["!bastion", "*"], "gpu")).toBe(true);
    expect(hostPatternsMatch(["!bastion"], "gpu")).toBe(false);
    expect(hostPatternsMatch(["a.b"], "aXb")).toBe(false);
  });

  it("expands %% tokens and ~, and refuses unknown tokens", () => {
    expect(expandSshTokens("~/.ssh/%h_%r_%p%%", { h: "gpu", r: "ml", p: "22", d: "/home/me" })).toBe("/home/me/.ssh/gpu_ml_22%");
    expect(expandSshTokens("/k/%u/%d/%n", { h: "x", n: "alias", u: "me", d: "/h" })).toBe("/k/me//h/alias");
    expect(() => expandSshTokens("/k/%C", { h: "x" })).toThrow(/%C/);
  });
});

describe("ssh_config lookup", () => {
  it("the first value obtained wins, IdentityFile accumulates, Host * comes last", async () => {
    const h = home({
      config: ["Host gpu", "  HostName 10.0.0.5", "  IdentityFile ~/.ssh/gpu", "Host gpu other", "  HostName 10.9.9.9", "  User first", "Host *", "  User second", "  Port 2200", "  IdentityFile ~/.ssh/id_all"].join("\n"),
    });
    const cfg = await readSshConfigHost("gpu", { path: join(h, ".ssh", "config"), home: h });
    expect(cfg).toMatchObject({ hostName: "10.0.0.5", user: "first", port: 2200, identityFiles: ["~/.ssh/gpu", "~/.ssh/id_all"] });
    const other = await readSshConfigHost("nothing-matches", { path: join(h, ".ssh", "config"), home: h });
    expect(other).toMatchObject({ user: "second", port: 2200, identityFiles: ["~/.ssh/id_all"] });
    expect(other.hostName).toBeUndefined();
  });

  it("a missing file is an empty config; a bad Port is a typed error", async () => {
    const h = home({ bad: "Host *\n Port twenty-two\n" });
    expect(await readSshConfigHost("gpu", { path: join(h, "nope", "config"), home: h })).toEqual({ identityFiles: [] });
    expect(await codeOf(readSshConfigHost("gpu", { path: join(h, ".ssh", "bad"), home: h }))).toBe("INVALID_ARGUMENT");
  });

  it("skips Match blocks: nothing under a Match applies, the next Host line resumes", async () => {
    const h = home({ config: ["Match host gpu exec \"rm -rf /\"", "  User evil", "  ProxyCommand nc %h %p", "Host gpu", "  User good"].join("\n") });
    const cfg = await readSshConfigHost("gpu", { path: join(h, ".ssh", "config"), home: h });
    expect(cfg.user).toBe("good");
    expect(cfg.proxyCommand).toBeUndefined();
  });

  it("Include: relative to ~/.ssh, globs in sorted order, inside a Host block only when it matches", async () => {
    const h = home({
      config: ["Include conf.d/*.conf", "Host other", "  Include ~/.ssh/never", "Host *", "  User fallback"].join("\n"),
      "conf.d/20-b.conf": "Host gpu\n  User from-b\n  Port 2020\n",
      "conf.d/10-a.conf": "Host gpu\n  User from-a\n",
      "conf.d/readme.txt": "Host gpu\n  User from-txt\n",
      never: "Host gpu\n  HostName should-not-apply\n",
    });
    const cfg = await readSshConfigHost("gpu", { path: join(h, ".ssh", "config"), home: h });
    expect(cfg).toMatchObject({ user: "from-a", port: 2020 });
    expect(cfg.hostName).toBeUndefined();
  });

  it("an Include loop is a typed error, not a hang", async () => {
    const h = home({ config: "Include loop-a\n", "loop-a": "Include loop-b\n", "loop-b": "Include loop-a\n" });
    expect(await codeOf(readSshConfigHost("gpu", { path: join(h, ".ssh", "config"), home: h }))).toBe("INVALID_ARGUMENT");
  });

  it("ProxyJump and ProxyCommand: the first one set wins", async () => {
    const h = home({ config: ["Host a", "  ProxyJump j1,me@j2:2222", "  ProxyCommand nc %h %p", "Host b", "  ProxyCommand nc %h %p", "  ProxyJump j1"].join("\n") });
    const a = await readSshConfigHost("a", { path: join(h, ".ssh", "config"), home: h });
    expect([a.proxyJump, a.proxyCommand]).toEqual(["j1,me@j2:2222", undefined]);
    const b = await readSshConfigHost("b", { path: join(h, ".ssh", "config"), home: h });
    expect([b.proxyJump, b.proxyCommand]).toEqual([undefined, "nc %h %p"]);
  });
});

describe("SSH route: config plus options", () => {
  const cfgText = [
    "Host gpu",
    "  HostName %h.internal",
    "  User ml",
    "  Port 2222",
    "  IdentityFile ~/.ssh/%r_key",
    "  IdentityFile /keys/%h",
    "  UserKnownHostsFile ~/kh/%n other-file",
    "  StrictHostKeyChecking no",
    "  ProxyJump jumper,root@[fd00::1]:2200",
    "Host jumper",
    "  HostName 192.0.2.9",
    "  User jumpuser",
    "  ProxyJump should-be-ignored",
    "Host legacy",
    "  ProxyCommand ssh -W %h:%p bastion",
  ].join("\n");

  it("applies HostName, User, Port, IdentityFile, UserKnownHostsFile and ProxyJump to an alias", async () => {
    const file = join(home({}), "cfg");
    writeFileSync(file, cfgText);
    const route = await resolveSshRoute({ host: "gpu", sshConfig: file });
    const d = homedir();
    expect(route.target).toMatchObject({
      label: "gpu (gpu.internal:2222)",
      host: "gpu.internal",
      port: 2222,
      username: "ml",
      identityFiles: [join(d, ".ssh", "ml_key"), "/keys/gpu.internal"],
      knownHostsPath: join(d, "kh", "gpu"),
    });
    expect(route.jumps.map((j) => [j.host, j.port, j.username])).toEqual([
      ["192.0.2.9", 22, "jumpuser"],
      ["fd00::1", 2200, "root"],
    ]);
  });

  it("options in code win over the file; proxyJump: 'none' and sshConfig: false turn it off", async () => {
    const file = join(home({}), "cfg");
    writeFileSync(file, cfgText);
    const route = await resolveSshRoute({ host: "gpu", sshConfig: file, port: 22, username: "me", knownHostsPath: "/kh", proxyJump: "none", privateKeyPath: "/k" });
    expect(route.target).toMatchObject({ host: "gpu.internal", port: 22, username: "me", knownHostsPath: "/kh", privateKeyPath: "/k" });
    expect(route.jumps).toEqual([]);
    const off = await resolveSshRoute({ host: "gpu", sshConfig: false });
    expect(off.target).toMatchObject({ host: "gpu", port: 22, username: userInfo().username, identityFiles: [] });
    expect(off.jumps).toEqual([]);
  });

  it("explicit jump hosts: strings looked up in the config, objects as given, the target's knownHostsPath for every hop", async () => {
    const file = join(home({}), "cfg");
    writeFileSync(file, cfgText);
    const route = await resolveSshRoute({ host: "10.0.0.7", sshConfig: file, knownHostsPath: "/kh", proxyJump: ["jumper", { host: "10.0.0.8", username: "u", privateKeyPath: "/k8" }] });
    expect(route.jumps).toMatchObject([
      { host: "192.0.2.9", username: "jumpuser", knownHostsPath: "/kh" },
      { host: "10.0.0.8", username: "u", privateKeyPath: "/k8", knownHostsPath: "/kh" },
    ]);
    expect(route.target.host).toBe("10.0.0.7");
  });

  it("a ProxyCommand that applies is refused with a typed error (runctl does not run it)", async () => {
    const file = join(home({}), "cfg");
    writeFileSync(file, cfgText);
    expect(await codeOf(resolveSshRoute({ host: "legacy", sshConfig: file }))).toBe("INVALID_ARGUMENT");
    expect((await resolveSshRoute({ host: "legacy", sshConfig: file, proxyJump: "none" })).target.host).toBe("legacy");
  });

  it("jump specs: user@host:port, ssh:// and [v6]; bad ones are typed errors before connecting", () => {
    expect(jumpList("a, me@b:2222 ,ssh://c,[::1]:2")).toEqual([{ host: "a" }, { host: "b", username: "me", port: 2222 }, { host: "c" }, { host: "::1", port: 2 }]);
    expect(jumpList("NONE")).toEqual([]);
    for (const bad of ["a,,b", "me@", "a:99999", "a b"]) expect(() => jumpList(bad), bad).toThrow(/proxyJump/);
    expect(() => parseHost({ host: "x", proxyJump: "me@:1" })).toThrow(/proxyJump/);
    expect(() => parseHost({ host: "x", proxyJump: [{ host: "" }] })).toThrow(/host/);
    expect(() => parseHost({ host: "x", sshConfig: "" })).toThrow(/sshConfig/);
  });
});

describe("journal records of an aliased host", () => {
  it("keep the config file and a string jump chain (no keys), so a reattach resolves the alias the same way", () => {
    const transport = { host: "gpu" } as unknown as Transport;
    const machine = machineOf({ host: "gpu", sshConfig: "/etc/runctl/ssh_config", proxyJump: "jump@bastion:2222", privateKey: "SECRET" }, transport, "/home/ml/.runctl");
    expect(JSON.stringify(machine.record)).not.toContain("SECRET");
    const back = hostFromRecord(JSON.parse(JSON.stringify(machine.record)));
    expect(back).toMatchObject({ host: "gpu", sshConfig: "/etc/runctl/ssh_config", proxyJump: "jump@bastion:2222" });
    // No port was given in code: the config's Port must still apply after a reattach.
    expect(back.port).toBeUndefined();
    expect(hostFromRecord(JSON.parse(JSON.stringify(machineOf({ host: "h", port: 2200 }, transport, "/r").record))).port).toBe(2200);
    const off = machineOf({ host: "10.0.0.5", sshConfig: false }, transport, "/r");
    expect(hostFromRecord(JSON.parse(JSON.stringify(off.record))).sshConfig).toBe(false);
  });
});
