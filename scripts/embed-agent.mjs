#!/usr/bin/env node
// Builds the machine-side agent (the Python package src/agent/runctl_agent/) into ONE file, a zipapp
// (a zip with __main__.py at its root, run as `python3 runctl-agent.pyz <command> ...`), and embeds
// it into src/agent/agent-source.generated.ts so the SDK can upload the agent without reading files
// at runtime (bundled builds have no src/ folder).
//   node scripts/embed-agent.mjs               write the generated file
//   node scripts/embed-agent.mjs --check       exit 1 if it is missing or stale (used by `npm test`)
//   node scripts/embed-agent.mjs --pyz-dir D   write D/runctl_agent-<sha12>.pyz (if absent) and print
//                                              its path (the tests run the built file)
// The build is deterministic (docs/decisions/0008-agent-zipapp.md): entries sorted by name, stored
// (not compressed: a deflate stream depends on the zlib version), timestamps 1980-01-01 00:00,
// permissions 0644, no extra fields; the same sources give the same bytes and sha256 on any machine.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const packageDir = join(root, "src", "agent", "runctl_agent");
const outPath = join(root, "src", "agent", "agent-source.generated.ts");

/** The zip's root __main__.py: `python3 file.pyz` puts the zip first on sys.path and runs this. */
const ROOT_MAIN = 'from runctl_agent.cli import entry\n\nentry()\n';

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** The package's files as [zip name, bytes], sorted by name: every *.py, nothing else (no caches). */
function packageEntries() {
  const names = readdirSync(packageDir).filter((n) => n.endsWith(".py")).sort();
  const entries = [["__main__.py", Buffer.from(ROOT_MAIN, "utf8")]];
  for (const name of names) {
    const bytes = readFileSync(join(packageDir, name));
    if (!Buffer.from(bytes.toString("utf8"), "utf8").equals(bytes)) {
      console.error(`embed-agent: ${relative(root, join(packageDir, name))} is not valid UTF-8`);
      process.exit(1);
    }
    entries.push([`runctl_agent/${name}`, bytes]);
  }
  return entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

/** A zip of stored entries with fixed metadata, so its bytes depend on the names and contents only. */
function buildZip(entries) {
  const DOS_TIME = 0; // 00:00:00
  const DOS_DATE = (0 << 9) | (1 << 5) | 1; // 1980-01-01
  const locals = [];
  const centrals = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const nameBytes = Buffer.from(name, "utf8");
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed: 2.0
    local.writeUInt16LE(0, 6); // flags
    local.writeUInt16LE(0, 8); // method: stored
    local.writeUInt16LE(DOS_TIME, 10);
    local.writeUInt16LE(DOS_DATE, 12);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameBytes.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE((3 << 8) | 20, 4); // made by: Unix, 2.0 (so the mode below counts)
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0, 8);
    central.writeUInt16LE(0, 10);
    central.writeUInt16LE(DOS_TIME, 12);
    central.writeUInt16LE(DOS_DATE, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(nameBytes.length, 28);
    // extra, comment, disk number, internal attributes: 0
    central.writeUInt32LE(((0o100644 << 16) >>> 0), 38); // regular file, rw-r--r--
    central.writeUInt32LE(offset, 42);
    locals.push(local, nameBytes, data);
    centrals.push(central, nameBytes);
    offset += local.length + nameBytes.length + data.length;
  }
  const centralDir = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(centralDir.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, centralDir, end]);
}

const args = process.argv.slice(2);
const check = args[0] === "--check" && args.length === 1;
const pyzDir = args[0] === "--pyz-dir" && args.length === 2 ? args[1] : null;
if (!(args.length === 0 || check || pyzDir)) {
  console.error(`embed-agent: bad arguments ${args.join(" ")}; usage: node scripts/embed-agent.mjs [--check | --pyz-dir DIR]`);
  process.exit(2);
}

const entries = packageEntries();
const pyz = buildZip(entries);
// The sha256 names the uploaded file on machines, so it must be of the exact bytes uploaded.
const sha256 = createHash("sha256").update(pyz).digest("hex");

if (pyzDir) {
  // Named by content: a stale file can never be picked up, and concurrent builds write equal bytes.
  const file = join(pyzDir, `runctl_agent-${sha256.slice(0, 12)}.pyz`);
  if (!existsSync(file)) {
    mkdirSync(pyzDir, { recursive: true });
    const tmp = `${file}.tmp-${process.pid}`;
    writeFileSync(tmp, pyz);
    renameSync(tmp, file);
  }
  console.log(file);
  process.exit(0);
}

const generated = [
  "// generated by scripts/embed-agent.mjs; do not edit",
  `// source: src/agent/runctl_agent/ (${entries.length} files) built as a zipapp (${pyz.length} bytes)`,
  "",
  "/** The machine-side agent: a zipapp (`python3 <file>.pyz <command>`), base64-encoded; uploaded to every machine. */",
  `export const AGENT_PYZ_BASE64: string = ${JSON.stringify(pyz.toString("base64"))};`,
  "",
  "/** sha256 (hex) of the agent's bytes (the decoded {@link AGENT_PYZ_BASE64}). */",
  `export const AGENT_SHA256: string = ${JSON.stringify(sha256)};`,
  "",
].join("\n");

const rel = relative(root, outPath);
if (check) {
  let current = null;
  try {
    current = readFileSync(outPath, "utf8");
  } catch {
    current = null;
  }
  if (current !== generated) {
    const why = current === null ? "is missing" : "is stale (src/agent/runctl_agent/ changed)";
    console.error(`embed-agent: ${rel} ${why}. Run \`npm run embed-agent\` and commit the result.`);
    process.exit(1);
  }
  console.log(`embed-agent: ${rel} is current (sha256 ${sha256.slice(0, 12)})`);
} else {
  const tmp = `${outPath}.tmp-${process.pid}`;
  writeFileSync(tmp, generated);
  renameSync(tmp, outPath);
  console.log(`embed-agent: wrote ${rel} (sha256 ${sha256.slice(0, 12)})`);
}
