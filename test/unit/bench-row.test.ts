import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { median, parseBenchRow, quantile } from "../../bench/bench-row.js";

describe("bench result lines", () => {
  it("printBenchRow writes one line that parseBenchRow reads back", () => {
    // A real process, so what is checked is the exact stdout a bench produces.
    const code = `import { printBenchRow } from "./bench/bench-row.ts";
      printBenchRow({ bench: "sync", row: "first sync", value: 1162.4567, unit: "ms", peer: 873, ratio: 1162.4567 / 873, goal: "<= 0.8x", met: false });
      printBenchRow({ bench: "spot", row: "x", value: NaN, unit: "s", peer: null, ratio: null, goal: "< 5 s", met: null });`;
    const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code], { encoding: "utf8" });
    expect(r.stderr).toBe("");
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toBe('BENCH_ROW {"bench":"sync","row":"first sync","value":1162.457,"unit":"ms","peer":873,"ratio":1.332,"goal":"<= 0.8x","met":false}');
    expect(parseBenchRow(lines[0]!)).toEqual({ bench: "sync", row: "first sync", value: 1162.457, unit: "ms", peer: 873, ratio: 1.332, goal: "<= 0.8x", met: false });
    // A missing figure stays valid JSON and reads back as NaN with met unknown.
    const missing = parseBenchRow(lines[1]!);
    expect(missing?.value).toBeNaN();
    expect(missing?.met).toBeNull();
  });

  it("ignores other lines and malformed rows", () => {
    expect(parseBenchRow("  repetition 1/3 done")).toBeUndefined();
    expect(parseBenchRow("BENCH_ROW {not json")).toBeUndefined();
    expect(parseBenchRow('BENCH_ROW {"row":"no bench"}')).toBeUndefined();
  });

  it("median and quantile", () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(quantile(xs, 0.5)).toBe(50);
    expect(quantile(xs, 0.99)).toBe(99);
    expect(quantile(xs, 1)).toBe(100);
    expect(quantile([], 0.5)).toBeNaN();
  });
});
