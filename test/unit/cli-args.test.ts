import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parseCliArgs, wantsJson } from "../../src/cli/cli-args.js";
import { EXIT_CODES, UsageError, exitCodeForStatus, reportError } from "../../src/cli/cli-errors.js";
import { helpText } from "../../src/cli/cli-help.js";
import { runCli } from "../../src/cli/run-cli.js";
import { RunctlError } from "runctl";

const RUN = "20261121-152117-utfo5u";

function usage(argv: string[]): string {
  try {
    parseCliArgs(argv);
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).exitCode).toBe(2);
    expect((err as UsageError).code).toBe("USAGE");
    return (err as Error).message;
  }
  throw new Error(`no usage error for ${JSON.stringify(argv)}`);
}

describe("parseCliArgs", () => {
  it("parses every command with its flags and defaults", () => {
    expect(parseCliArgs(["ls"])).toEqual({ kind: "ls", json: false });
    expect(parseCliArgs(["ls", "--json"])).toEqual({ kind: "ls", json: true });
    expect(parseCliArgs(["logs", RUN])).toEqual({ kind: "logs", json: false, runId: RUN, follow: false });
    expect(parseCliArgs(["logs", "-f", RUN, "--json"])).toEqual({ kind: "logs", json: true, runId: RUN, follow: true });
    expect(parseCliArgs(["logs", RUN, "--follow"])).toMatchObject({ follow: true });
    expect(parseCliArgs(["attach", RUN])).toEqual({ kind: "attach", json: false, runId: RUN });
    expect(parseCliArgs(["checkpoints", RUN, "--verify"])).toEqual({ kind: "checkpoints", json: false, runId: RUN, verify: true });
    expect(parseCliArgs(["cancel", RUN])).toEqual({ kind: "cancel", json: false, runId: RUN, strategy: "interrupt" });
    expect(parseCliArgs(["cancel", RUN, "--strategy", "kill"])).toMatchObject({ strategy: "kill" });
    expect(parseCliArgs(["cancel", RUN, "--strategy=interrupt"])).toMatchObject({ strategy: "interrupt" });
    expect(parseCliArgs(["sweep"])).toEqual({ kind: "sweep", json: false, dryRun: false, force: false, region: undefined, owner: undefined });
    expect(parseCliArgs(["sweep", "--dry-run", "--region", "eu-west-1", "--owner", "all", "--json"])).toEqual({ kind: "sweep", json: true, dryRun: true, force: false, region: "eu-west-1", owner: "all" });
    expect(parseCliArgs(["sweep", "--force"])).toMatchObject({ kind: "sweep", force: true, dryRun: false });
    expect(parseCliArgs(["plan", "examples/quickstart.ts"])).toEqual({ kind: "plan", json: false, file: "examples/quickstart.ts" });
    expect(parseCliArgs(["quickstart"])).toEqual({ kind: "quickstart", json: false, dir: undefined, steps: undefined });
    expect(parseCliArgs(["quickstart", "--dir", "ck", "--steps", "20", "--json"])).toEqual({ kind: "quickstart", json: true, dir: "ck", steps: 20 });
  });

  it("help and version, globally and per command", () => {
    expect(parseCliArgs(["--help"])).toEqual({ kind: "help", command: undefined });
    expect(parseCliArgs(["-h"])).toEqual({ kind: "help", command: undefined });
    expect(parseCliArgs(["help", "logs"])).toEqual({ kind: "help", command: "logs" });
    expect(parseCliArgs(["logs", "--help"])).toEqual({ kind: "help", command: "logs" });
    // --help wins over a missing argument: `runctl cancel --help` must not be a usage error.
    expect(parseCliArgs(["cancel", "-h"])).toEqual({ kind: "help", command: "cancel" });
    expect(parseCliArgs(["--version"])).toEqual({ kind: "version", json: false });
    expect(parseCliArgs(["-V", "--json"])).toEqual({ kind: "version", json: true });
  });

  it("usage errors: unknown command or flag, missing or extra arguments, bad values", () => {
    expect(usage([])).toMatch(/missing command/);
    expect(usage(["frobnicate"])).toMatch(/unknown command "frobnicate"/);
    expect(usage(["--bogus"])).toMatch(/unknown option "--bogus"/);
    expect(usage(["ls", "--bogus"])).toMatch(/ls: Unknown option '--bogus'/);
    expect(usage(["ls", "-f"])).toMatch(/Unknown option '-f'/);
    expect(usage(["ls", "extra"])).toMatch(/ls takes no arguments/);
    expect(usage(["logs"])).toMatch(/logs needs RUN/);
    expect(usage(["logs", RUN, RUN])).toMatch(/takes one RUN, got 2/);
    expect(usage(["logs", "../etc"])).toMatch(/not a run id/);
    expect(usage(["logs", RUN, "--follow=yes"])).toMatch(/does not take an argument/);
    expect(usage(["cancel", RUN, "--strategy"])).toMatch(/argument missing/);
    expect(usage(["cancel", RUN, "--strategy", "nicely"])).toMatch(/must be one of interrupt, kill/);
    // A flag that would do nothing is refused, not ignored.
    expect(usage(["cancel", RUN, "--strategy", "detach"])).toMatch(/detach would do nothing/);
    expect(usage(["sweep", "--region", ""])).toMatch(/--region needs a value/);
    expect(usage(["sweep", "--owner"])).toMatch(/argument missing/);
    expect(usage(["plan"])).toMatch(/plan needs FILE/);
    expect(usage(["--version", "ls"])).toMatch(/unexpected argument/);
    expect(usage(["help", "logs", "extra"])).toMatch(/unexpected argument/);
    expect(usage(["help", "nope"])).toMatch(/unknown command "nope"/);
  });

  it("sees --json before parsing (so usage errors can be JSON), but not after --", () => {
    expect(wantsJson(["ls", "--bogus", "--json"])).toBe(true);
    expect(wantsJson(["ls"])).toBe(false);
    expect(wantsJson(["plan", "--", "--json"])).toBe(false);
  });
});

describe("exit codes and error reports", () => {
  it("maps errors and statuses to distinct exit codes", () => {
    expect(EXIT_CODES).toEqual({ ok: 0, failed: 1, usage: 2, notFound: 3, interrupted: 130 });
    expect(reportError(new RunctlError("RUN_NOT_FOUND", "no run"))).toEqual({ code: "RUN_NOT_FOUND", message: "no run", exitCode: 3 });
    expect(reportError(new RunctlError("ABORTED", "stop"))).toMatchObject({ code: "ABORTED", exitCode: 130 });
    expect(reportError(new RunctlError("STORAGE_ERROR", "oops"))).toMatchObject({ code: "STORAGE_ERROR", exitCode: 1 });
    expect(reportError(new Error("boom"))).toEqual({ code: "INTERNAL", message: "boom", exitCode: 1 });
    expect(reportError(new Error("boom"), true)).toMatchObject({ code: "ABORTED", exitCode: 130 });
    expect(reportError(new UsageError("bad"))).toEqual({ code: "USAGE", message: "bad", exitCode: 2 });
    // A raw Node system error is IO_ERROR with Node's message (naming the path), never INTERNAL or ENOENT.
    let enoent: unknown;
    try {
      readFileSync("/nonexistent/runctl-file");
    } catch (err) {
      enoent = err;
    }
    expect(reportError(enoent)).toEqual({ code: "IO_ERROR", message: expect.stringContaining("/nonexistent/runctl-file"), exitCode: 1 });
    expect(exitCodeForStatus("succeeded")).toBe(0);
    expect(exitCodeForStatus("failed")).toBe(1);
    expect(exitCodeForStatus("canceled")).toBe(1);
    expect(exitCodeForStatus("interrupted")).toBe(1);
    expect(exitCodeForStatus("detached")).toBe(130);
  });

  it("runCli prints usage errors on stderr, or as one JSON document on stdout with --json", async () => {
    const run = async (argv: string[]): Promise<{ code: number; out: string; err: string }> => {
      let out = "";
      let err = "";
      const code = await runCli(argv, { stdout: { write: (s: string) => (out += s) }, stderr: { write: (s: string) => (err += s) } });
      return { code, out, err };
    };
    const plain = await run(["ls", "--bogus"]);
    expect(plain.code).toBe(2);
    expect(plain.out).toBe("");
    expect(plain.err).toMatch(/^runctl: ls: Unknown option '--bogus'.* \(USAGE\)\n/);

    const json = await run(["ls", "--bogus", "--json"]);
    expect(json.code).toBe(2);
    expect(json.err).toBe("");
    expect(JSON.parse(json.out)).toEqual({ schemaVersion: 1, error: { code: "USAGE", message: expect.stringContaining("--bogus") } });

    const help = await run(["--help"]);
    expect(help.code).toBe(0);
    expect(help.out).toBe(helpText());
    for (const command of ["ls", "logs", "attach", "checkpoints", "cancel", "sweep", "plan"]) expect(help.out).toContain(`  ${command}`);
    const logsHelp = await run(["logs", "--help"]);
    expect(logsHelp.out).toContain("Usage: runctl logs RUN [-f] [--json]");
    expect(logsHelp.out).toContain("Runctl.attach(runId, { provider })");
    expect(logsHelp.out).toContain("130");
  });
});
