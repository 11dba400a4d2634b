import { describe, expect, it } from "vitest";
import { createEventPrinter, type ProgressEvent, type RunEvent } from "runctl";
import { createProgressThrottle } from "../../src/util/progress-throttle.js";

const base = { seq: 1, time: "2026-12-06T00:00:00.000Z", runId: "r1" } as const;
/** A progress event recorded `ms` after the run's start. */
const progress = (phase: ProgressEvent["phase"], bytesDone: number, bytesTotal: number, name?: string, ms = 0): RunEvent => {
  const time = new Date(Date.parse(base.time) + ms).toISOString();
  return name === undefined ? { ...base, time, type: "progress", phase, bytesDone, bytesTotal } : { ...base, time, type: "progress", phase, bytesDone, bytesTotal, name };
};

function capture(isTTY: boolean): { stream: { write(chunk: string): void; isTTY: boolean }; text: () => string } {
  let text = "";
  return { stream: { write: (chunk) => void (text += chunk), isTTY }, text: () => text };
}

describe("createProgressThrottle", () => {
  it("reports the first count, at most one per interval, and always the final one", () => {
    let clock = 0;
    const seen: [number, number][] = [];
    const report = createProgressThrottle((done, total) => seen.push([done, total]), 250, () => clock);
    report(0, 1000);
    report(100, 1000); // same instant: held back
    clock = 200;
    report(200, 1000); // within 250 ms of the first
    clock = 260;
    report(300, 1000);
    report(250, 1000); // lower: dropped, reports never go backwards
    report(1000, 1000); // final: always
    report(1000, 1000); // after the final: nothing
    expect(seen).toEqual([[0, 1000], [300, 1000], [1000, 1000]]);
  });

  it("starts over when the total changes (a retried transfer)", () => {
    const seen: [number, number][] = [];
    const report = createProgressThrottle((done, total) => seen.push([done, total]), 250, () => 0);
    report(500, 1000);
    report(10, 800);
    report(800, 800);
    expect(seen).toEqual([[500, 1000], [10, 800], [800, 800]]);
  });
});

describe("createEventPrinter", () => {
  it("off a terminal prints a long transfer as a line a second (by event time), a quick one not at all", () => {
    const out = capture(false);
    const printer = createEventPrinter(out.stream);
    const MiB = 2 ** 20;
    printer.event({ ...base, type: "phase", phase: "syncing" });
    printer.event(progress("sync", 0, 50 * MiB, undefined, 0));
    printer.event(progress("sync", 6 * MiB, 50 * MiB, undefined, 250)); // within a second of the start: no line
    printer.event(progress("sync", 12 * MiB, 50 * MiB, undefined, 1000));
    printer.event(progress("sync", 30 * MiB, 50 * MiB, undefined, 1500)); // within a second of the last line
    printer.event(progress("sync", 50 * MiB, 50 * MiB, undefined, 1750)); // the end of a transfer that printed
    printer.event(progress("checkpoint", 0, 2048, "step-20", 2000));
    printer.event(progress("checkpoint", 2048, 2048, "step-20", 2250)); // quick: its commit event says it all
    printer.line("a line of my own");
    printer.close();
    expect(out.text()).toBe(["• syncing", "  sync 12.0 MiB / 50.0 MiB (24%)", "  sync 50.0 MiB / 50.0 MiB (100%)", "a line of my own", ""].join("\n"));
    expect(out.text()).not.toContain("\r");
  });

  it("a checkpoint committed again under the same name is a new transfer", () => {
    const out = capture(false);
    const printer = createEventPrinter(out.stream, { lineIntervalMs: 100 });
    for (const start of [0, 10_000]) {
      printer.event(progress("checkpoint", 0, 10, "last.pt", start));
      printer.event(progress("checkpoint", 5, 10, "last.pt", start + 100));
      printer.event(progress("checkpoint", 10, 10, "last.pt", start + 150));
    }
    expect(out.text().split("\n").filter((l) => l.includes("last.pt"))).toEqual([
      "  checkpoint last.pt 5 B / 10 B (50%)",
      "  checkpoint last.pt 10 B / 10 B (100%)",
      "  checkpoint last.pt 5 B / 10 B (50%)",
      "  checkpoint last.pt 10 B / 10 B (100%)",
    ]);
  });

  it("on a terminal draws one bar updated in place, with lines printed above it", () => {
    const out = capture(true);
    const printer = createEventPrinter(out.stream, { render: (e) => (e.type === "log" ? e.line : undefined) });
    printer.event(progress("output", 0, 400));
    printer.event(progress("output", 100, 400));
    printer.event({ ...base, type: "log", line: "hello", offset: 6 });
    printer.event({ ...base, type: "phase", phase: "teardown" }); // rendered as nothing
    printer.event(progress("output", 400, 400));
    printer.close(); // the bar ended with its final event: nothing to end
    const text = out.text();
    expect(text).toBe(
      [
        "\r\x1b[Koutput [------------------------]   0%  0 B / 400 B",
        "\r\x1b[Koutput [######------------------]  25%  100 B / 400 B",
        "\r\x1b[Khello\noutput [######------------------]  25%  100 B / 400 B",
        "\r\x1b[Koutput [########################] 100%  400 B / 400 B\n",
      ].join(""),
    );
    // What a terminal shows: the line, then the finished bar.
    const screen = text.split("\n").map((line) => line.split("\r").at(-1)?.replace("\x1b[K", ""));
    expect(screen).toEqual(["hello", "output [########################] 100%  400 B / 400 B", ""]);
  });

  it("close() ends an unfinished bar's line; progress: false hides progress", () => {
    const out = capture(true);
    const printer = createEventPrinter(out.stream);
    printer.event(progress("data", 5, 10));
    printer.close();
    expect(out.text().endsWith("\n")).toBe(true);
    const quiet = capture(true);
    const hidden = createEventPrinter(quiet.stream, { progress: false });
    hidden.event(progress("data", 5, 10));
    hidden.close();
    expect(quiet.text()).toBe("");
  });
});
