import { describe, expect, it } from "vitest";
import { CommandError, RunctlError } from "../../src/errors/runctl-error.js";
import type { ExecResult } from "../../src/transport/types.js";
import { parseApplyReply, parseManifestReply } from "../../src/sync/agent-sync-replies.js";

const call = { argv: ["python3", "/a/agent.py", "manifest", "/w"], host: "box" };
const result = (exitCode: number | null, stdout: string, stderr = ""): ExecResult => ({
  exitCode,
  signal: null,
  durationMs: 5,
  stdout,
  stdoutTail: stdout,
  stderrTail: stderr,
});
const hex = "AB".repeat(32);

describe("parseManifestReply", () => {
  it("reads the files map and lower-cases hashes", () => {
    const files = parseManifestReply(result(0, JSON.stringify({ files: { "a.py": { size: 3, mode: 420, sha256: hex } } })), call);
    expect(files).toEqual({ "a.py": { size: 3, mode: 420, sha256: hex.toLowerCase() } });
  });

  it("keeps a path named __proto__ as data", () => {
    const files = parseManifestReply(result(0, `{"files":{"__proto__":{"size":1,"mode":420,"sha256":"${hex}"}}}`), call);
    expect(Object.keys(files)).toEqual(["__proto__"]);
    expect(Object.getPrototypeOf(files)).toBe(Object.prototype);
  });

  it("fails with AGENT_FAILED on unreadable output and COMMAND_FAILED on a non-zero exit", () => {
    expect(() => parseManifestReply(result(0, "Traceback"), call)).toThrow(expect.objectContaining({ code: "AGENT_FAILED" }));
    expect(() => parseManifestReply(result(0, JSON.stringify({ files: { a: { size: -1, mode: 1, sha256: hex } } })), call)).toThrow(
      expect.objectContaining({ code: "AGENT_FAILED", message: expect.stringContaining('"a"') }),
    );
    const err = (() => {
      try {
        parseManifestReply(result(2, "", "can't open file"), call);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(CommandError);
    expect(err).toMatchObject({ code: "COMMAND_FAILED", exitCode: 2, host: "box", stderrTail: "can't open file" });
  });
});

describe("parseApplyReply", () => {
  it("returns the counts on success", () => {
    expect(parseApplyReply(result(0, '{"ok":true,"written":3,"deleted":1}\n'), call)).toEqual({ written: 3, deleted: 1 });
  });

  it("maps exit 6 to SYNC_VERIFY_FAILED with the mismatches", () => {
    const mismatches = Array.from({ length: 12 }, (_, i) => ({ path: `f${i}`, reason: "sha256 differs" }));
    let error: unknown;
    try {
      parseApplyReply(result(6, JSON.stringify({ ok: false, mismatches })), call);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(RunctlError);
    expect(error).toMatchObject({ code: "SYNC_VERIFY_FAILED", details: { mismatches } });
    expect((error as Error).message).toContain("f9: sha256 differs");
    expect((error as Error).message).toContain("and 2 more");
  });

  it("maps exit 7 to UNSAFE_PATH and other failures to COMMAND_FAILED", () => {
    expect(() => parseApplyReply(result(7, '{"ok":false,"error":"unsafe path in tar stream: ../x"}'), call)).toThrow(
      expect.objectContaining({ code: "UNSAFE_PATH", message: expect.stringContaining("../x") }),
    );
    expect(() => parseApplyReply(result(1, '{"ok":false,"error":"bad tar stream"}'), call)).toThrow(CommandError);
    expect(() => parseApplyReply(result(null, ""), call)).toThrow(expect.objectContaining({ code: "COMMAND_FAILED" }));
    expect(() => parseApplyReply(result(0, "garbage"), call)).toThrow(expect.objectContaining({ code: "AGENT_FAILED" }));
  });
});
