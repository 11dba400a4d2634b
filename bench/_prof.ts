import { mkdtempSync, writeFileSync, mkdirSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { fileURLToPath } from "node:url";
import { Runctl, sshHosts } from "runctl";
import { startTestbed } from "../test/testbed/testbed.js";
import { scanTree, hashScan, syncTree } from "../src/sync/index.js";
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
  await t("scanTree", () => scanTree(dir));
  const scan = await scanTree(dir);
  await t("hashScan nocache", () => hashScan(scan));
  const cp = join(process.env["RUNCTL_HOME"]!, "hc.json");
  await hashScan(scan, { hashCachePath: cp });
  await t("hashScan cached", () => hashScan(scan, { hashCachePath: cp }));
  await t("exec true", () => Promise.resolve(m.exec(["true"])), 5);
  await t("exec python -c pass", () => Promise.resolve(m.exec([agent.python, "-c", "pass"])), 5);
  await t("exec agent --help-ish (status missing)", () => Promise.resolve(m.exec([agent.python, agent.path, "status", "/nonexistent"])), 5);
  await t("first sync (machine.sync)", async () => { await m.exec(["rm", "-rf", remote, posix.join(h.home, ".prof.hashcache.json")]); await m.sync(dir, remote); }, 3);
  await t("remote manifest (warm)", () => Promise.resolve(m.exec([agent.python, agent.path, "manifest", remote])), 5);
  await t("noop machine.sync", () => m.sync(dir, remote), 5);
  await t("noop syncTree cached", () => syncTree({ transport: m.transport, python: agent.python, agentPath: agent.path, localDir: dir, remoteDir: remote, hashCachePath: cp }), 5);
  await t("1-change syncTree cached", async () => { writeFileSync(join(dir, "pkg1/m1.py"), randomBytes(5000)); await syncTree({ transport: m.transport, python: agent.python, agentPath: agent.path, localDir: dir, remoteDir: remote, hashCachePath: cp }); }, 5);
  await t("sync-apply empty-ish (1 change, nocache)", async () => { writeFileSync(join(dir, "pkg1/m1.py"), randomBytes(5000)); await m.sync(dir, remote); }, 5);
  await m.release();
} finally { await bed.stop(); rmSync(dir, { recursive: true, force: true }); }
