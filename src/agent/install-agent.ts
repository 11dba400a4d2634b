import { AGENT_PYZ_BASE64, AGENT_SHA256 } from "./agent-source.generated.js";
import { CommandError } from "../errors/runctl-error.js";
import type { Machine } from "../providers/types.js";
import { shellQuote } from "../transport/shell-quote.js";

/** The agent on one machine: its path and the absolute interpreter that runs it. */
export interface InstalledAgent {
  /** Absolute path of the agent file. */
  readonly path: string;
  /**
   * The resolved interpreter (`sys.executable`), so each agent call skips wrappers such as pyenv
   * shims, which cost 150-250 ms a call.
   */
  readonly python: string;
}

const installed = new WeakMap<Machine, Promise<InstalledAgent>>();

/** Where the agent lives on a machine: versioned by content, so upgrades never clash. */
export function agentPathOn(rootDir: string): string {
  return `${rootDir}/agent/runctl-agent-${AGENT_SHA256.slice(0, 12)}.pyz`;
}

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
  const p = shellQuote(path);
  // Write to a temporary name then rename, so a concurrent run never executes half a file.
  const script = [
    `if ! test -f ${p}; then`,
    `  mkdir -p "$(dirname ${p})" && cat > ${p}.tmp.$$ && mv -f ${p}.tmp.$$ ${p} || exit 90`,
    `fi`,
    `exec ${shellQuote(machine.python)} -c 'import sys; print(sys.executable); sys.exit(0 if sys.version_info >= (3, 8) else 91)'`,
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

