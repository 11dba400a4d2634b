import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, utimesSync, writeFileSync, chmodSync } from "node:fs";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SshHost, SshTransport } from "runctl";
import { main as syncToHost } from "../../examples/sync-to-host.js";
import type { TestHost } from "../testbed/inject.js";
import { leaseOneHost, remoteSha256 } from "../support/ssh-hosts.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("e2e-ssh-sync");
let testHost: TestHost;
let host: SshHost;
let inspector: SshTransport;
let release: (() => Promise<void>) | undefined;

beforeAll(async () => ({ testHost, host, inspector, release } = await leaseOneHost()));
afterAll(() => release?.());

const sha256 = (data: Buffer | string): string => createHash("sha256").update(data).digest("hex");

function write(root: string, files: Record<string, string | Buffer>): void {
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), content);
  }
}

/** What must arrive: every file that no rule excludes. Written out by hand, not computed by runctl. */
const SYNCED = [
  ".gitignore",
  ".runctlignore",
  "train.py",
  "run.sh",
  "secret.txt", // sub/.gitignore only applies inside sub/
  "keep.log", // *.log in .gitignore, re-included by !keep.log in .runctlignore
  "weights.bin",
  "model/__init__.py",
  "model/net.py",
  "configs/base.yaml",
  "sub/.gitignore",
  "sub/visible.txt",
  "sub/important.tmp", // *.tmp in sub/.gitignore, re-included by !important.tmp
  "sub/deeper/data.txt",
  "data/labels.csv", // data/* in the ignore option, re-included by !data/labels.csv
];
const EXCLUDED = [
  ".git/HEAD", // default excludes
  "node_modules/pkg/index.js",
  "__pycache__/train.cpython-311.pyc",
  "model/__pycache__/net.cpython-311.pyc",
  "model/old.pyc",
  ".venv/bin/python",
  ".DS_Store",
  "debug.log", // root .gitignore
  "outputs/result.json",
  "notes/todo.md", // .runctlignore
  "sub/secret.txt", // nested .gitignore
  "sub/scratch.tmp",
  "sub/deeper/cache.tmp", // nested .gitignore applies below its folder too
  "data/train.csv", // ignore option
];
const IGNORE = ["data/*", "!data/labels.csv"];

function project(): string {
  const dir = tempDir("ssh-sync-proj");
  const files: Record<string, string | Buffer> = {
    ".gitignore": "*.log\n/outputs/\n",
    ".runctlignore": "notes/\n!keep.log\n",
    "sub/.gitignore": "secret.txt\n*.tmp\n!important.tmp\n",
    "weights.bin": randomBytes(256 * 1024),
    "run.sh": "#!/bin/sh\nexec python3 train.py\n",
  };
  for (const p of [...SYNCED, ...EXCLUDED]) files[p] ??= `content of ${p}\n`;
  write(dir, files);
  chmodSync(join(dir, "run.sh"), 0o755);
  return dir;
}

/** `path -> sha256` of the files that should be on the host, read from the local disk. */
function expected(dir: string, paths: readonly string[]): Record<string, string> {
  return Object.fromEntries(paths.map((p) => [p, sha256(readFileSync(join(dir, p)))]));
}

describe("code sync to an SSH host", () => {
  it("mirrors exactly the unignored files, then sends only changes, propagates deletions and repairs edits made on the host", async () => {
    const local = project();
    const remoteDir = `${testHost.home}/.runctl/work/ssh-sync-${Date.now().toString(36)}`;
    const sync = () => syncToHost({ host, localDir: local, remoteDir, ignore: IGNORE, verbose: false });

    // 1. First sync: every unignored file, byte for byte (sha256sum on the host), mode kept.
    const first = await sync();
    expect(first.remoteDir).toBe(remoteDir);
    expect(first.address).toBe(testHost.address);
    expect(first.result.files).toBe(SYNCED.length);
    expect(first.result.uploadedFiles).toBe(SYNCED.length);
    expect(first.result.deletedFiles).toBe(0);
    let paths = [...SYNCED];
    expect(await remoteSha256(inspector, remoteDir)).toEqual(expected(local, paths));
    const mode = await inspector.exec(["stat", "-c", "%a", `${remoteDir}/run.sh`]);
    expect(mode.stdout.trim()).toBe("755");

    // 2. Nothing changed (a touched file has the same content): nothing travels.
    const now = new Date();
    utimesSync(join(local, "train.py"), now, now);
    const noop = await sync();
    expect(noop.result.uploadedFiles).toBe(0);
    expect(noop.result.deletedFiles).toBe(0);

    // 3. Two edits, one new file, one deletion, and a new file that an ignore rule excludes.
    writeFileSync(join(local, "train.py"), "print('edited')\n");
    const weights = readFileSync(join(local, "weights.bin"));
    weights[1234] = (weights[1234]! + 1) % 256; // same size, different content
    writeFileSync(join(local, "weights.bin"), weights);
    write(local, { "model/layers.py": "LAYERS = 3\n", "extra.log": "ignored\n" });
    rmSync(join(local, "configs/base.yaml"));
    const incremental = await sync();
    expect(incremental.result.uploadedFiles).toBe(3);
    expect(incremental.result.deletedFiles).toBe(1);
    paths = [...paths.filter((p) => p !== "configs/base.yaml"), "model/layers.py"];
    expect(await remoteSha256(inspector, remoteDir)).toEqual(expected(local, paths));
    // The emptied folder is gone too.
    expect((await inspector.exec(["test", "-e", `${remoteDir}/configs`])).exitCode).toBe(1);

    // 4. Behind runctl's back on the host: a same-size edit that restores the mtime, an append, a deleted file, a stray file, a mode change.
    const tamper = await inspector.exec([
      "sh",
      "-c",
      'cd "$1" && touch -r model/net.py ../.ref && sed -i s/content/CONTENT/ model/net.py && touch -r ../.ref model/net.py && rm ../.ref && echo junk >> sub/visible.txt && rm data/labels.csv && echo stray > stray.txt && chmod 644 run.sh',
      "sh",
      remoteDir,
    ]);
    expect(tamper.exitCode, tamper.stderrTail).toBe(0);
    expect(await remoteSha256(inspector, remoteDir)).not.toEqual(expected(local, paths));
    const repair = await sync();
    expect(repair.result.uploadedFiles).toBe(4); // net.py, visible.txt, labels.csv, run.sh (mode)
    expect(repair.result.deletedFiles).toBe(1); // stray.txt
    expect(await remoteSha256(inspector, remoteDir)).toEqual(expected(local, paths));
    expect((await inspector.exec(["stat", "-c", "%a", `${remoteDir}/run.sh`])).stdout.trim()).toBe("755");

    console.log(
      `[ssh-sync] first ${first.result.durationMs} ms (${first.result.uploadedFiles} files), no-op ${noop.result.durationMs} ms, ` +
        `incremental ${incremental.result.durationMs} ms (3 sent, 1 deleted), repair ${repair.result.durationMs} ms (4 sent, 1 deleted)`,
    );
  });
});
