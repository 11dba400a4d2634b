import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sshTransport, type SshTransport, type SshTransportOptions } from "../../src/transport/ssh/index.js";
import type { OutputChunk } from "../../src/transport/types.js";
import { leaseTestHosts, useTestbed, type HostLease, type TestHost } from "../testbed/inject.js";
import { rejection } from "../support/caught.js";

const sha256 = (data: Uint8Array | string): string => createHash("sha256").update(data).digest("hex");

describe("SSH transport (against the testbed)", () => {
  let lease: HostLease;
  let a: TestHost;
  let b: TestHost;
  let t: SshTransport;
  let localDir: string;
  const opened: SshTransport[] = [];

  /** A transport to a testbed host; the address is checked to route via the testbed bridge first. */
  async function transportFor(host: TestHost, extra: Partial<SshTransportOptions> = {}): Promise<SshTransport> {
    const address = extra.host ?? host.address;
    await useTestbed().assertSafe(address);
    const tr = sshTransport({ host: host.address, username: host.user, privateKeyPath: host.privateKeyPath, knownHostsPath: host.knownHostsPath, ...extra });
    opened.push(tr);
    return tr;
  }

  beforeAll(async () => {
    lease = await leaseTestHosts(2);
    [a, b] = lease.hosts as [TestHost, TestHost];
    localDir = await mkdtemp(join(useTestbed().info.stateDir, "local-"));
    t = await transportFor(a);
    const t0 = performance.now();
    await t.connect();
    console.log(`[ssh-transport] first connect ${(performance.now() - t0).toFixed(0)} ms`);
  });

  afterAll(async () => {
    await Promise.all(opened.map((x) => x.close()));
    await rm(localDir, { recursive: true, force: true });
    await lease?.release();
  });

  it("connects in well under a second and names the host", async () => {
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const tr = await transportFor(a);
      const t0 = performance.now();
      await tr.connect();
      times.push(performance.now() - t0);
      await tr.close();
    }
    times.sort((x, y) => x - y);
    console.log(`[ssh-transport] connect median ${times[2]!.toFixed(0)} ms (${times.map((x) => x.toFixed(0)).join(", ")})`);
    expect(times[2]).toBeLessThan(1_000);
    expect(t.host).toBe(a.address);
    const r = await t.exec(["hostname"]);
    expect(r.stdout.trim()).toBe(a.hostname);
  });

  it("passes hostile argv elements through exactly", async () => {
    const args = ["", " ", "it's", "\"q\"", "$HOME", "$(id)", "`id`", "a;b", "a && b", "new\nline", "*", "~", "-n", "\\", "!", "ünï 😀", "'\"'", "#x", "x=y", "2>&1"];
    const py = await t.exec(["python3", "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", ...args]);
    expect(py.exitCode, py.stderrTail).toBe(0);
    expect(JSON.parse(py.stdout)).toEqual(args);
    const pf = await t.exec(["printf", "%s\\0", ...args]);
    expect(pf.stdout.split("\0").slice(0, -1)).toEqual(args);
    // A program name with = or a leading dash is still the program.
    const weird = await t.exec(["sh", "-c", 'printf "%s" "$0"', "a=b"]);
    expect(weird.stdout).toBe("a=b");
  });

  it("runs scripts with sh, with stdout and stderr tails", async () => {
    const r = await t.exec({ script: "x=$((1 + 2)); echo \"$x\"; echo oops >&2; [ -n \"$BASH_VERSION\" ] && echo bash || echo posix" });
    expect(r.exitCode).toBe(0);
    expect(r.signal).toBeNull();
    expect(r.stdout).toBe("3\nposix\n");
    expect(r.stdoutTail).toBe("3\nposix\n");
    expect(r.stderrTail).toBe("oops\n");
    expect(r.durationMs).toBeGreaterThanOrEqual(0);
  });

  it("applies cwd and env, and validates env names", async () => {
    await t.exec(["mkdir", "-p", `${a.home}/work dir/it's`]);
    const env = { PLAIN: "1", TRICKY: "a'b \"c\" $HOME `id` ;\nline2", EMPTY: "" };
    const r = await t.exec(["python3", "-c", "import os, json; print(json.dumps([os.getcwd(), os.environ['PLAIN'], os.environ['TRICKY'], os.environ['EMPTY']]))"], {
      cwd: `${a.home}/work dir/it's`,
      env,
    });
    expect(r.exitCode, r.stderrTail).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([`${a.home}/work dir/it's`, "1", env.TRICKY, ""]);
    const script = await t.exec({ script: 'echo "$TRICKY" | head -1; pwd' }, { env, cwd: "/tmp" });
    expect(script.stdout).toBe("a'b \"c\" $HOME `id` ;\n/tmp\n");
    await rejection(t.exec(["true"], { env: { "BAD-NAME": "x" } }), "INVALID_ARGUMENT");
    await rejection(t.exec(["true"], { env: { "1X": "x" } }), "INVALID_ARGUMENT");
    await rejection(t.exec([]), "INVALID_ARGUMENT");
    const missing = await t.exec(["true"], { cwd: "/no/such/dir" });
    expect(missing.exitCode).not.toBe(0);
  });

  it("streams stdin: strings, bytes, and a 20 MB stream whose sha256 matches on the host", async () => {
    expect((await t.exec(["cat"], { stdin: "hello\n" })).stdout).toBe("hello\n");
    expect((await t.exec(["wc", "-c"], { stdin: new Uint8Array([0, 1, 2, 255]) })).stdout.trim()).toBe("4");
    expect((await t.exec(["cat"])).stdout).toBe(""); // stdin closed at once: no hang

    const size = 20 * 1024 * 1024;
    const blob = randomBytes(size);
    const chunks = function* (): Generator<Buffer> {
      for (let off = 0; off < size; off += 256 * 1024) yield blob.subarray(off, off + 256 * 1024);
    };
    const t0 = performance.now();
    const r = await t.exec(["sha256sum"], { stdin: Readable.from(chunks()) });
    const ms = performance.now() - t0;
    console.log(`[ssh-transport] 20 MB stdin in ${ms.toFixed(0)} ms (${(size / 1e6 / (ms / 1000)).toFixed(0)} MB/s)`);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.split(" ")[0]).toBe(sha256(blob));
  });

  it("streams output chunks in order while the command runs", async () => {
    const h = t.exec({ script: "for i in 1 2 3; do echo out$i; sleep 0.15; echo err$i >&2; sleep 0.15; done" });
    const seen: string[] = [];
    let firstAt = 0;
    const t0 = Date.now();
    for await (const c of h) {
      if (firstAt === 0) firstAt = Date.now() - t0;
      seen.push(...Buffer.from(c.data).toString().trim().split("\n").map((l) => `${c.stream}:${l}`));
    }
    const r = await h;
    expect(seen).toEqual(["stdout:out1", "stderr:err1", "stdout:out2", "stderr:err2", "stdout:out3", "stderr:err3"]);
    expect(firstAt).toBeLessThan(r.durationMs - 500); // the first line came long before the exit
  });

  it("moves bulk stdout fast through raw channels", async () => {
    const size = 200 * 1024 * 1024;
    const h = t.exec(["head", "-c", String(size), "/dev/zero"], { captureStdout: false, tailBytes: 16 });
    const t0 = performance.now();
    let got = 0;
    for await (const c of h as AsyncIterable<OutputChunk>) got += c.data.length;
    const r = await h;
    const ms = performance.now() - t0;
    console.log(`[ssh-transport] 200 MB stdout in ${ms.toFixed(0)} ms (${(size / 1e6 / (ms / 1000)).toFixed(0)} MB/s)`);
    expect(got).toBe(size);
    expect(r.stdout).toBe("");
    expect(r.stdoutTail).toBe("\0".repeat(16));
  });

  it("reports exit codes and signals as results", async () => {
    const three = await t.exec({ script: "echo bye >&2; exit 3" });
    expect(three.exitCode).toBe(3);
    expect(three.signal).toBeNull();
    expect(three.stderrTail).toBe("bye\n");
    const killed = await t.exec({ script: "kill -9 $$" });
    expect(killed.exitCode).toBeNull();
    expect(killed.signal).toBe("SIGKILL");
    const argvKilled = await t.exec(["sh", "-c", "kill -TERM $$"]);
    expect(argvKilled.signal).toBe("SIGTERM");
  });

  it("runs more commands at once than the session limit", async () => {
    const results = await Promise.all(Array.from({ length: 25 }, (_, i) => t.exec({ script: `sleep 0.2; echo ${i}` })));
    expect(results.map((r) => r.stdout.trim())).toEqual(Array.from({ length: 25 }, (_, i) => String(i)));
  });

  it("puts and gets files over SFTP with parent folders, mode and matching sha256", async () => {
    const data = randomBytes(8 * 1024 * 1024 + 123);
    const local = join(localDir, "up.bin");
    await writeFile(local, data);
    const remote = `${a.home}/deep/er/folder/up.bin`;
    const t0 = performance.now();
    await t.putFile(local, remote, { mode: 0o640 });
    const upMs = performance.now() - t0;
    const st = await t.exec(["sh", "-c", 'sha256sum "$1" | cut -d" " -f1; stat -c %a "$1"; ls -a "$(dirname "$1")"', "sh", remote]);
    const [remoteSha, mode, ...listing] = st.stdout.trim().split("\n");
    expect(remoteSha).toBe(sha256(data));
    expect(mode).toBe("640");
    expect(listing.filter((n) => n.includes(".part"))).toEqual([]); // no temporary left behind

    await t.putFile(local, remote); // overwrite works
    const back = join(localDir, "x", "y", "down.bin");
    const t1 = performance.now();
    await t.getFile(remote, back);
    const downMs = performance.now() - t1;
    expect(sha256(await readFile(back))).toBe(sha256(data));
    console.log(`[ssh-transport] 8 MB put ${upMs.toFixed(0)} ms, get ${downMs.toFixed(0)} ms`);

    await rejection(t.getFile(`${a.home}/nope.bin`, join(localDir, "nope")), "NOT_FOUND");
    await rejection(t.putFile(join(localDir, "missing"), `${a.home}/m`), "NOT_FOUND");
  });

  it("refuses a host whose key differs from known_hosts before anything runs", async () => {
    const wrong = join(localDir, "known_hosts.wrong");
    await writeFile(wrong, `${a.address} ${b.hostKey}\n`);
    const marker = `${a.home}/must-not-exist-${Date.now()}`;
    const tr = await transportFor(a, { knownHostsPath: wrong, connectRetries: 2 });
    const t0 = Date.now();
    const e = await rejection(tr.exec(["touch", marker]), "HOST_KEY_MISMATCH");
    expect(e.retryable).toBe(false);
    expect(Date.now() - t0).toBeLessThan(3_000); // not retried
    expect(e.message).toMatch(/MISMATCH/);
    expect(e.message).toContain("SHA256:");
    await rejection(tr.connect(), "HOST_KEY_MISMATCH");
    expect((await t.exec(["ls", "-a", a.home])).stdout).not.toContain("must-not-exist");
  });

  it("refuses an unknown host with advice, and warns loudly when the check is turned off", async () => {
    const empty = join(localDir, "known_hosts.empty");
    await writeFile(empty, "");
    const e = await rejection((await transportFor(a, { knownHostsPath: empty })).connect(), "HOST_KEY_MISMATCH");
    expect(e.message).toContain("ssh-keyscan");
    expect(e.message).toContain("insecureSkipHostKeyCheck");
    await rejection((await transportFor(a, { knownHostsPath: join(localDir, "does-not-exist") })).connect(), "HOST_KEY_MISMATCH");

    const warnings: string[] = [];
    const insecure = await transportFor(a, { knownHostsPath: empty, insecureSkipHostKeyCheck: true, onWarning: (w) => warnings.push(w) });
    expect((await insecure.exec(["hostname"])).stdout.trim()).toBe(a.hostname);
    expect(warnings.join("\n")).toMatch(/host key checking is OFF/);
  });

  it("accepts [addr]:port and hashed known_hosts entries", async () => {
    const { execFileSync } = await import("node:child_process");
    const hashed = join(localDir, "known_hosts.hashed");
    await writeFile(hashed, `# comment\n${a.address} ${a.hostKey}\n`);
    execFileSync("ssh-keygen", ["-H", "-f", hashed], { stdio: "ignore" });
    expect(await readFile(hashed, "utf8")).toMatch(/^\|1\|/m);
    await (await transportFor(a, { knownHostsPath: hashed })).connect();
    const bracket = join(localDir, "known_hosts.bracket");
    await writeFile(bracket, `[${a.address}]:22,other.example ${a.hostKey}\n`);
    // OpenSSH looks up port 22 without brackets, so this file does not name the host.
    await rejection((await transportFor(a, { knownHostsPath: bracket })).connect(), "HOST_KEY_MISMATCH");
  });

  it("fails with AUTH_FAILED for a key the host does not accept, without leaking it", async () => {
    const key = await readFile(b.privateKeyPath, "utf8");
    const tr = await transportFor(a, { privateKey: key }); // privateKey takes precedence over privateKeyPath
    const e = await rejection(tr.connect(), "AUTH_FAILED");
    expect(e.retryable).toBe(false);
    expect(e.message).not.toContain(key.slice(40, 80));
    expect(JSON.stringify(e.toJSON())).not.toContain(key.slice(40, 80));
    const garbage = await transportFor(a, { privateKey: "not a key", passphrase: "s3cret-pass" });
    const g = await rejection(garbage.connect(), "AUTH_FAILED");
    expect(g.message).not.toContain("s3cret-pass");
  });

  it("reports an address nobody answers on as HOST_UNREACHABLE (retryable)", async () => {
    const bed = useTestbed();
    const tr = await transportFor(a, { host: bed.unusedAddress, connectRetries: 0, readyTimeoutMs: 5_000 });
    const t0 = Date.now();
    const e = await rejection(tr.connect(), "HOST_UNREACHABLE");
    expect(e.retryable).toBe(true);
    console.log(`[ssh-transport] unreachable detected in ${Date.now() - t0} ms`);
  });

  it("aborts a running command, killing it on the host", async () => {
    const tag = 700000 + (process.pid % 90000);
    const ac = new AbortController();
    const h = t.exec(["sleep", String(tag)], { signal: ac.signal });
    await new Promise((r) => setTimeout(r, 400));
    const t0 = Date.now();
    ac.abort();
    await rejection(h, "ABORTED");
    expect(Date.now() - t0).toBeLessThan(1_000);
    await new Promise((r) => setTimeout(r, 300));
    expect((await t.exec(["ps", "-eo", "args"])).stdout).not.toContain(`sleep ${tag}`);
    await rejection(t.exec(["true"], { signal: AbortSignal.abort() }), "ABORTED");
  });

  it("rejects in-flight commands with a retryable TRANSPORT_ERROR when the host dies, and reconnects after restart", async () => {
    const tr = await transportFor(b);
    await tr.connect();
    const h = tr.exec({ script: "echo started; sleep 60" });
    const chunks: string[] = [];
    const iterating = (async () => {
      for await (const c of h) chunks.push(Buffer.from(c.data).toString());
    })().then(
      () => undefined,
      (e: unknown) => e,
    );
    while (chunks.length === 0) await new Promise((r) => setTimeout(r, 20));
    const t0 = Date.now();
    await b.kill();
    const e = await rejection(h, "TRANSPORT_ERROR");
    expect(e.retryable).toBe(true);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(await iterating).toMatchObject({ code: "TRANSPORT_ERROR" }); // the iterator throws it too
    expect(chunks.join("")).toBe("started\n");

    await b.restart();
    const again = await tr.exec(["hostname"]);
    expect(again.stdout.trim()).toBe(b.hostname);
  });

  it("detects a partition mid-command within about 5 s (keepalive)", async () => {
    const tr = await transportFor(b);
    await tr.connect();
    const h = tr.exec(["sleep", "60"]);
    await new Promise((r) => setTimeout(r, 300));
    await b.partition();
    const t0 = Date.now();
    try {
      const e = await rejection(h, "TRANSPORT_ERROR");
      expect(e.retryable).toBe(true);
      const ms = Date.now() - t0;
      console.log(`[ssh-transport] partition detected in ${ms} ms`);
      expect(ms).toBeLessThan(6_000);
    } finally {
      await b.heal();
    }
    // The next command reconnects transparently.
    expect((await tr.exec(["hostname"])).stdout.trim()).toBe(b.hostname);
  });

  it("closes idempotently and refuses work afterwards", async () => {
    const tr = await transportFor(a);
    await tr.connect();
    const h = tr.exec(["sleep", "30"]);
    await new Promise((r) => setTimeout(r, 200));
    await tr.close();
    await tr.close();
    const e = await rejection(h, "TRANSPORT_ERROR");
    expect(e.retryable).toBe(false);
    await rejection(tr.exec(["true"]), "TRANSPORT_ERROR");
  });
});
