import { describe, expect, it } from "vitest";
import { diffManifests, type RemoteFiles } from "../../src/sync/diff.js";
import type { ManifestEntry } from "../../src/sync/manifest.js";

const h = (c: string): string => c.repeat(64);
const entry = (path: string, size = 1, sha = "a", mode = 0o644): ManifestEntry => ({ path, size, mode, sha256: h(sha) });

describe("diffManifests", () => {
  it("uploads new and changed files and deletes vanished ones", () => {
    const local = [entry("same.py"), entry("new.py", 5), entry("size.py", 2), entry("sha.py", 1, "b"), entry("mode.sh", 1, "a", 0o755)];
    const remote: RemoteFiles = {
      "same.py": { size: 1, mode: 0o644, sha256: h("a") },
      "size.py": { size: 1, mode: 0o644, sha256: h("a") },
      "sha.py": { size: 1, mode: 0o644, sha256: h("a") },
      "mode.sh": { size: 1, mode: 0o644, sha256: h("a") },
      "gone.py": { size: 1, mode: 0o644, sha256: h("a") },
      "z/also-gone.txt": { size: 3, mode: 0o644, sha256: h("c") },
    };
    expect(diffManifests(local, remote)).toEqual({
      upload: ["mode.sh", "new.py", "sha.py", "size.py"],
      delete: ["gone.py", "z/also-gone.txt"],
      uploadBytes: 1 + 5 + 1 + 2,
    });
  });

  it("is empty for identical manifests and uploads everything to an empty remote", () => {
    const local = [entry("a"), entry("b/c", 7)];
    const remote: RemoteFiles = Object.fromEntries(local.map((e) => [e.path, { size: e.size, mode: e.mode, sha256: e.sha256 }]));
    expect(diffManifests(local, remote)).toEqual({ upload: [], delete: [], uploadBytes: 0 });
    expect(diffManifests(local, {})).toEqual({ upload: ["a", "b/c"], delete: [], uploadBytes: 8 });
    expect(diffManifests([], remote)).toEqual({ upload: [], delete: ["a", "b/c"], uploadBytes: 0 });
  });

  it("does not delete a remote file whose path became a local folder", () => {
    const local = [entry("a/b"), entry("x")];
    const remote: RemoteFiles = { a: { size: 1, mode: 0o644, sha256: h("a") }, "x/y": { size: 1, mode: 0o644, sha256: h("a") } };
    expect(diffManifests(local, remote)).toEqual({ upload: ["a/b", "x"], delete: ["x/y"], uploadBytes: 2 });
  });

  it("handles paths that look like Object.prototype keys", () => {
    const remote = JSON.parse('{"__proto__": {"size": 1, "mode": 420, "sha256": "' + h("a") + '"}}') as RemoteFiles;
    expect(diffManifests([entry("constructor"), entry("toString")], remote)).toEqual({
      upload: ["constructor", "toString"],
      delete: ["__proto__"],
      uploadBytes: 2,
    });
    expect(diffManifests([entry("__proto__")], remote).upload).toEqual([]);
  });
});
