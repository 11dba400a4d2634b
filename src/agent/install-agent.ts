import { AGENT_PYZ_BASE64, AGENT_SHA256 } from "./agent-source.generated.js";
import { CommandError } from "../errors/runctl-error.js";
import type { Machine } from "../providers/types.js";
import { shellQuote } from "../transport/shell-quote.js";

/** The agent on one machine: its path and the absolute interpreter that runs it. */
export interface InstalledAgent {
  /** Absolute path of the agent's entry script (`<folder>/__main__.py`): `python3 <path> <command>` runs it. */
  readonly path: string;
  /**
   * The resolved interpreter (`sys.executable`), so each agent call skips wrappers such as pyenv
   * shims, which cost 150-250 ms a call.
   */
  readonly python: string;
}

const installed = new WeakMap<Machine, Promise<InstalledAgent>>();

/**
 * Where the agent lives on a machine: the zipapp unpacked into a folder named by its content (so
 * upgrades never clash), with its bytecode compiled at install (decision 0029); this is its entry script.
 */
export function agentPathOn(rootDir: string): string {
  return `${agentDirOn(rootDir)}/__main__.py`;
}

function agentDirOn(rootDir: string): string {
  return `${rootDir}/agent/runctl-agent-${AGENT_SHA256.slice(0, 12)}`;
}

/**
 * Run on the machine as `python3 -c UNPACK_PY TMP DIR`, TMP holding agent.pyz: unpacks it, compiles
 * every module (a zipapp is compiled again at every start: zipimport writes no bytecode; a module
 * that does not compile here is compiled at run time, as Python always does), then renames TMP to DIR
 * whole, so no run ever sees half an agent. When a concurrent install renamed first, DIR is not
 * empty, the rename fails and this copy is removed.
 */
const UNPACK_PY = [
  "import compileall, os, shutil, sys, zipfile",
  "t, d = sys.argv[1], sys.argv[2]",
  "z = zipfile.ZipFile(os.path.join(t, 'agent.pyz'))",
  "z.extractall(t)",
  "z.close()",
  "os.unlink(os.path.join(t, 'agent.pyz'))",
  "compileall.compile_dir(t, quiet=2)",
  "try:",
  "    os.rename(t, d)",
  "except OSError:",
  "    shutil.rmtree(t)",
].join("\n");

/** The agent's bytes: the zipapp built from src/agent/runctl_agent/ (scripts/embed-agent.mjs). */
let agentBytes: Uint8Array | undefined;
function agentPyz(): Uint8Array {
  agentBytes ??= Buffer.from(AGENT_PYZ_BASE64, "base64");
  return agentBytes;
}

/**
 * Uploads the agent to the machine unless that exact version is already there, and checks that
 * the machine has Python 3.8+. Returns the agent's path and resolved interpreter. Done once per
 * machine object.
 *
 * @example
 * ```ts
 * const agent = await ensureAgent(machine);
 * await machine.transport.exec([agent.python, agent.path, "status", runDir]);
 * ```
 */
export function ensureAgent(machine: Machine, options: { readonly signal?: AbortSignal | undefined } = {}): Promise<InstalledAgent> {
  let pending = installed.get(machine);
  if (!pending) {
    pending = install(machine, options.signal);
    installed.set(machine, pending);
    pending.catch(() => installed.delete(machine));
  }
  return pending;
}

async function install(machine: Machine, signal: AbortSignal | undefined): Promise<InstalledAgent> {
  const path = agentPathOn(machine.rootDir);
  const dir = shellQuote(agentDirOn(machine.rootDir));
  const main = shellQuote(path);
  // The interpreter is checked first (exit 91: too old, 127: none), then the agent is unpacked
  // with the interpreter that will run it, so its bytecode fits. Temporary folders over an hour old
  // are what killed installs left (an install takes seconds; a root shared between machines may
  // hold another one's install in progress, so the age is the test, not a PID).
  const script = [
    `py=$(${shellQuote(machine.python)} -c 'import sys; print(sys.executable); sys.exit(0 if sys.version_info >= (3, 8) else 91)') || exit $?`,
    `if ! test -f ${main}; then`,
    `  find ${shellQuote(`${machine.rootDir}/agent`)} -maxdepth 1 -name 'runctl-agent-*.tmp.*' -mmin +60 -exec rm -rf {} + 2>/dev/null`,
    `  t=${dir}.tmp.$$`,
    `  rm -rf "$t" && mkdir -p "$t" && cat > "$t/agent.pyz" && "$py" -c ${shellQuote(UNPACK_PY)} "$t" ${dir} || { rm -rf "$t"; exit 90; }`,
    `  test -f ${main} || exit 90`,
    `fi`,
    `printf '%s\\n' "$py"`,
  ].join("\n");
  const result = await machine.transport.exec({ script }, { stdin: agentPyz(), signal });
  const python = result.stdout.trim().split("\n").pop() ?? "";
  if (result.exitCode === 0) return { path, python: python.startsWith("/") ? python : machine.python };
  const failure = { command: `install agent to ${path}`, host: machine.address, exitCode: result.exitCode, signal: result.signal, durationMs: result.durationMs, stdoutTail: result.stdoutTail, stderrTail: result.stderrTail };
  if (result.exitCode === 91 || result.exitCode === 127) {
    throw new CommandError(failure, {
      code: "AGENT_FAILED",
      message: `runctl needs Python 3.8 or newer on ${machine.address} (tried ${JSON.stringify(machine.python)}). Install python3 there or pass the interpreter's path.`,
    });
  }
  throw new CommandError(failure, { code: "AGENT_FAILED" });
}

