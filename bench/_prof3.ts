import { mkdtempSync, writeFileSync, mkdirSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { scanTree, hashScan, packSyncTar } from "../src/sync/index.js";
const t = async (label: string, fn: () => Promise<unknown>, n = 5) => { const xs: number[] = []; for (let i = 0; i < n; i++) { const t0 = performance.now(); await fn(); xs.push(performance.now() - t0); } console.log(label.padEnd(40), xs.map((x) => x.toFixed(0)).join(" ")); };
const dir = mkdtempSync(join(tmpdir(), "prof-"));
for (let i = 0; i < 1950; i++) { mkdirSync(join(dir, `pkg${i % 40}`), { recursive: true }); writeFileSync(join(dir, `pkg${i % 40}/m${i}.py`), randomBytes(1024 + Math.floor(Math.random() * 19 * 1024))); }
mkdirSync(join(dir, "assets")); for (let i = 0; i < 50; i++) writeFileSync(join(dir, `assets/s${i}.bin`), randomBytes(800_000));
const scan = await scanTree(dir);
await t("scan", () => scanTree(dir));
const man = await hashScan(scan);
await t("hash", () => hashScan(scan));
await t("pack tar to nowhere", async () => { const tar = packSyncTar({ root: man.root, entries: man.entries }); tar.stream.resume(); await tar.done; await new Promise((r) => tar.stream.on("end", r)); });
await t("pack small only", async () => { const tar = packSyncTar({ root: man.root, entries: man.entries, upload: man.entries.filter(e => e.size < 100000).map(e => e.path) }); tar.stream.resume(); await tar.done; });
await t("pack big only", async () => { const tar = packSyncTar({ root: man.root, entries: man.entries, upload: man.entries.filter(e => e.size >= 100000).map(e => e.path) }); tar.stream.resume(); await tar.done; });
rmSync(dir, { recursive: true, force: true });
