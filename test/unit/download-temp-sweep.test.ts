/**
 * The temporary files that killed downloads leave beside their targets are swept by the next
 * download into the folder: a file of this host whose process is gone at once, any file after an
 * hour without a write; a running download's file, another host's recent one and files that are
 * not runctl's stay.
 */
import { spawn, spawnSync } from "node:child_process";
import { readdirSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { sweepStaleDownloads, tempFileName, writeFileAtomically } from "../../src/storage/download-to-file.js";
import { tempDir } from "../support/temp-home.js";

/** The host id this process puts in its temporary files' names. */
const host = /\.runctl-([0-9a-f]{6})-\d+-[0-9a-f]{8}$/.exec(tempFileName("/x/model.bin"))?.[1] ?? "none";
const otherHost = host === "abcdef" ? "fedcba" : "abcdef";

/** The pid of a process that has exited. */
function deadPid(): number {
  const child = spawnSync("true");
  if (typeof child.pid !== "number") throw new Error("spawning `true` failed");
  return child.pid;
}

function file(dir: string, name: string, ageMs = 0): string {
  writeFileSync(join(dir, name), "partial");
  if (ageMs > 0) {
    const t = new Date(Date.now() - ageMs);
    utimesSync(join(dir, name), t, t);
  }
  return name;
}

const HOUR = 60 * 60 * 1000;

describe("stale download temporaries are swept", () => {
  it("names a temporary file after the target, this host and this process", () => {
    expect(tempFileName("/data/ckpt/model.bin")).toMatch(new RegExp(`^\\.model\\.bin\\.runctl-${host}-${process.pid}-[0-9a-f]{8}$`));
  });

  it("removes this host's files of exited processes and files idle for an hour; keeps the rest", async () => {
    const dir = tempDir("temp-sweep");
    const dead = deadPid();
    // Another download still running on this host.
    const running = spawn("sleep", ["60"], { stdio: "ignore" });
    if (typeof running.pid !== "number") throw new Error("spawning `sleep` failed");
    const gone = [
      file(dir, `.model.bin.runctl-${host}-${dead}-0123abcd`),
      file(dir, `.other.pt.runctl-${host}-${dead}-89abcdef`),
      file(dir, `.model.bin.runctl-${host}-${process.pid}-0badf00d`, 2 * HOUR),
      file(dir, `.model.bin.runctl-${otherHost}-${dead}-0123abcd`, 2 * HOUR),
      file(dir, ".model.bin.runctl-0123456789ab", 2 * HOUR),
    ];
    const kept = [
      file(dir, `.model.bin.runctl-${host}-${process.pid}-0123abcd`),
      file(dir, `.model.bin.runctl-${host}-${running.pid}-76543210`),
      file(dir, `.model.bin.runctl-${otherHost}-${dead}-fedcba98`),
      file(dir, ".model.bin.runctl-ba9876543210"),
      file(dir, ".model.bin.runctl-notours", 2 * HOUR),
      file(dir, `model.bin.runctl-${host}-${dead}-0123abcd`, 2 * HOUR),
      file(dir, "model.bin", 2 * HOUR),
    ];
    try {
      expect((await sweepStaleDownloads(dir)).sort()).toEqual([...gone].sort());
      expect(readdirSync(dir).sort()).toEqual([...kept].sort());
    } finally {
      running.kill("SIGKILL");
    }
  });

  it("the first download into a folder sweeps it; a missing folder is no error", async () => {
    const dir = tempDir("temp-sweep");
    const stale = file(dir, `.model.bin.runctl-${host}-${deadPid()}-0123abcd`);
    await expect(sweepStaleDownloads(join(dir, "missing"))).resolves.toEqual([]);
    await writeFileAtomically(join(dir, "model.bin"), undefined, async (f) => (await f.write("new")).bytesWritten);
    expect(readdirSync(dir)).toEqual(["model.bin"]);
    expect(readdirSync(dir)).not.toContain(stale);
  });
});
