import { appendFileSync } from "node:fs";
import type { Reporter, SerializedError, TestModule } from "vitest/node";

/** First line of an error's message, at most `max` characters: enough to recognise it in a log tail. */
function firstLine(error: SerializedError | undefined, max = 300): string {
  const line = `${error?.name ? `${error.name}: ` : ""}${error?.message ?? "unknown error"}`.split("\n")[0] ?? "";
  return line.length > max ? `${line.slice(0, max)}…` : line;
}

/**
 * Prints one plain closing line, `Tests: N passed, N failed` (and skipped), so any CI log reader can
 * tell how many tests really ran; then one line per failed test, per test file that failed outside
 * its tests (a hook, collection) and per unhandled error — any of which fails the run. With
 * `RUNCTL_TEST_SUMMARY_FILE` set, the same lines are appended to that file: .ci/run prints them again
 * at its very end, where a log cut to its last lines still shows what failed on which Node.
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<SerializedError>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    const problems: string[] = [];
    for (const module of testModules) {
      for (const test of module.children.allTests()) {
        const result = test.result();
        if (result.state === "passed") passed++;
        else if (result.state === "failed") {
          failed++;
          problems.push(`FAILED ${module.relativeModuleId} > ${test.fullName}: ${firstLine(result.errors?.[0])}`);
        } else skipped++;
      }
      const outside = [...module.errors(), ...[...module.children.allSuites()].flatMap((s) => s.errors())];
      if (outside.length > 0) problems.push(`FAILED ${module.relativeModuleId} (outside its tests): ${firstLine(outside[0])}`);
    }
    for (const error of unhandledErrors) problems.push(`UNHANDLED ERROR: ${firstLine(error)}`);
    const text = `\nTests: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}${unhandledErrors.length ? `, ${unhandledErrors.length} unhandled errors` : ""}\n${problems.map((p) => `${p}\n`).join("")}`;
    process.stdout.write(text);
    const file = process.env["RUNCTL_TEST_SUMMARY_FILE"];
    if (file) appendFileSync(file, text);
  }
}
