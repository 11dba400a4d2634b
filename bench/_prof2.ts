import { mkdtempSync, writeFileSync, mkdirSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { execFileSync, spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { Runctl, sshHosts } from "runctl";
import { startTestbed } from "../test/testbed/testbed.js";
import { scanTree, hashScan, packSyncTar } from "../src/sync/index.js";
import { ensureAgent } from "../src/agent/install-agent.js";

const t = async (label: string, fn: () => Promise<unknown>, n = 3) => { const xs: number[] = []; for (let i = 0; i < n; i++) { const t0 = performance.now(); await fn(); xs.push(performance.now() - t0); } console.log(label.padEnd(40), xs.map((x) => x.toFixed(0)).join(" ")); };
const dir = mkdtempSync(join(tmpdir(), "prof-"));
for (let i = 0; i < 1950; i++) { mkdirSync(join(dir, `pkg${i % 40}`), { recursive: true }); writeFileSync(join(dir, `pkg${i % 40}/m${i}.py`), randomBytes(1024 + Math.floor(Math.random() * 19 * 1024))); }
mkdirSync(join(dir, "assets")); for (let i = 0; i < 50; i++) writeFileSync(join(dir, `assets/s${i}.bin`), randomBytes(800_000));
process.env["RUNCTL_HOME"] = mkdtempSync(join(tmpdir(), "prof-home-"));
const bed = await startTestbed({ hosts: 1, stateDir: fileURLToPath(new URL("../.runctl-testbed", import.meta.url)) });
try {
  const h = bed.hosts[0]!; await bed.assertSafe(h.address);
  const m = await Runctl.instance(sshHosts({ host: h.address, username: h.user, privateKeyPath: h.privateKeyPath, knownHostsPath: h.knownHostsPath })).provision();
  const agent = await ensureAgent(m);
  const remote = posix.join(h.home, "prof");
  const big = randomBytes(50 * 1024 * 1024);
  const ssh = ["-F", "/dev/null", "-i", h.privateKeyPath, "-o", "IdentitiesOnly=yes", "-o", `UserKnownHostsFile=${h.knownHostsPath}`, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", `${h.user}@${h.address}`];
  await t("ssh2 cat>/dev/null 50MB", () => Promise.resolve(m.exec({ script: "cat >/dev/null" }, { stdin: Readable.from((function* () { for (let o = 0; o < big.length; o += 262144) yield big.subarray(o, o + 262144); })()) })));
  await t("openssh cat>/dev/null 50MB", async () => { spawnSync("ssh", [...ssh, "cat >/dev/null"], { input: big }); });
  await t("openssh true", async () => { spawnSync("ssh", [...ssh, "true"]); });
  const scan = await scanTree(dir);
  const man = await hashScan(scan);
  await t("pack tar to nowhere", async () => { const tar = packSyncTar({ root: man.root, entries: man.entries }); tar.stream.resume(); await tar.done; });
  await t("pack tar -> ssh2 cat>/dev/null", async () => { const tar = packSyncTar({ root: man.root, entries: man.entries }); await Promise.all([tar.done, Promise.resolve(m.exec({ script: "cat >/dev/null" }, { stdin: tar.stream }))]); });
  // tar to file, then agent sync-apply locally on the host via ssh (stdin from file on host fs)
  const tarPath = join(h.home, "x.tar");
  { const tar = packSyncTar({ root: man.root, entries: man.entries }); const chunks: Buffer[] = []; for await (const c of tar.stream) chunks.push(c as Buffer); writeFileSync(tarPath, Buffer.concat(chunks)); }
  execFileSync("chmod", ["644", tarPath]);
  await t("agent sync-apply from file on host", async () => { await m.exec(["rm", "-rf", remote, posix.join(h.home, ".prof.hashcache.json")]); const r = await m.exec({ script: `${agent.python} ${agent.path} sync-apply ${remote} < ${tarPath}` }); if (r.exitCode !== 0) throw new Error(r.stdout + r.stderrTail); });
  await t("tar xf from file on host", async () => { await m.exec(["rm", "-rf", remote]); await m.exec({ script: `mkdir -p ${remote} && tar xf ${tarPath} -C ${remote}` }); });
  await t("ssh2 cat > file 50MB", () => Promise.resolve(m.exec({ script: `cat > ${h.home}/y.bin` }, { stdin: Readable.from((function* () { for (let o = 0; o < big.length; o += 262144) yield big.subarray(o, o + 262144); })()) })));
  await m.release();
} finally { await bed.stop(); rmSync(dir, { recursive: true, force: true }); }
