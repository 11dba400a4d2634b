import { resolve } from "node:path";
import { doctor, local, sshHosts, type DoctorCheck, type DoctorReport, type DoctorStatus, type SshHost } from "../index.js";
import { parseHost } from "../providers/ssh-hosts/ssh-hosts-provider.js";
import { output, type CliIo } from "./cli-output.js";
import { CliError, EXIT_CODES, UsageError, type ExitCode } from "./cli-errors.js";
import { loadPlanModule } from "./plan-module.js";

/** The mark of each status: symbols on a terminal, plain ASCII in a pipe or a log. */
const MARKS: Readonly<Record<"tty" | "plain", Readonly<Record<DoctorStatus, string>>>> = {
  tty: { ok: "✓", warn: "!", fail: "✗", skip: "-" },
  plain: { ok: "[ok]  ", warn: "[warn]", fail: "[FAIL]", skip: "[skip]" },
};

/**
 * `runctl doctor`: this machine (no argument), an SSH host (`--host`), or a plan module's target
 * (FILE); prints one line per check and what to fix. Exit 0 when nothing failed, 1 when a check failed.
 *
 * @example
 * ```ts
 * const code = await doctorCommand({ file: undefined, host: "ml@10.0.0.5:22", identity: "~/.ssh/id_ed25519", json: false }, io);
 * ```
 */
export async function doctorCommand(
  options: { readonly file: string | undefined; readonly host: string | undefined; readonly identity: string | undefined; readonly json: boolean },
  io: CliIo,
): Promise<ExitCode> {
  const o = output(io);
  const signal = io.signal;
  let report: DoctorReport;
  if (options.file !== undefined) {
    const loaded = await loadPlanModule(resolve(io.cwd ?? process.cwd(), options.file), "doctor");
    const plan = loaded.plan as { doctor?: unknown };
    if (typeof plan.doctor !== "function") throw new CliError("UNSUPPORTED", `${options.file}: its plan has no doctor() (built with an older runctl); update runctl in that project.`);
    report = await (plan.doctor as (o: { signal?: AbortSignal | undefined }) => Promise<DoctorReport>)({ signal });
  } else if (options.host !== undefined) {
    let host: SshHost;
    try {
      host = parseHost(options.host, "doctor --host");
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    // Warnings (an insecure host key opt-out) go to stderr, never into --json's stdout.
    report = await doctor(sshHosts({ ...host, ...(options.identity !== undefined ? { privateKeyPath: options.identity } : {}) }, { onWarning: (m) => o.err(m) }), { signal });
  } else {
    report = await doctor(local(), { signal });
  }
  if (signal?.aborted) throw new CliError("ABORTED", "Interrupted.", EXIT_CODES.interrupted);
  if (options.json) {
    o.json({ schemaVersion: 1, ok: report.ok, checks: report.checks });
  } else {
    const marks = (io.stdout as { isTTY?: unknown }).isTTY === true ? MARKS.tty : MARKS.plain;
    for (const c of report.checks) for (const line of checkLines(c, marks)) o.out(line);
    const count = (s: DoctorStatus): number => report.checks.filter((c) => c.status === s).length;
    o.out(`doctor: ${count("ok")} ok, ${count("warn")} warning(s), ${count("fail")} failed${count("skip") ? `, ${count("skip")} skipped` : ""}`);
  }
  return report.ok ? EXIT_CODES.ok : EXIT_CODES.failed;
}

/**
 * A check as text: `MARK title: detail (CODE)`, then `fix: ...` indented when there is one.
 *
 * @example
 * ```ts
 * checkLines({ id: "gpu", title: "GPU visibility on localhost", status: "warn", detail: "no GPU visible" }); // ["[warn] GPU visibility on localhost: no GPU visible"]
 * ```
 */
export function checkLines(c: DoctorCheck, marks: Readonly<Record<DoctorStatus, string>> = MARKS.plain): string[] {
  const lines = [`${marks[c.status]} ${c.title}: ${c.detail}${c.code ? ` (${c.code})` : ""}`];
  if (c.fix && c.status !== "ok") lines.push(`${" ".repeat(marks[c.status].length)} fix: ${c.fix}`);
  return lines;
}
