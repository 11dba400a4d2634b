import { posix } from "node:path";
import type { Machine } from "../providers/types.js";
import { sourceLogger, type RunctlLogger } from "../util/logger.js";

/** The most of the agent's log relayed at a run's end: its last lines, the ones about how it ended. */
const AGENT_LOG_TAIL_BYTES = 64 * 1024;

/**
 * Relays the agent's own debug lines (`<runDir>/agent.log` on the machine, which the agent writes
 * with secret values already taken out) to the provider's logger at `debug`, once the run is over,
 * before its folder may be removed. Nothing without a logger; a failure to read is logged, not thrown.
 *
 * @example
 * ```ts
 * await relayAgentLog(run.machine, run.runDir, provider.logger);
 * ```
 */
export async function relayAgentLog(machine: Machine, runDir: string, logger: RunctlLogger | undefined): Promise<void> {
  const log = sourceLogger(logger, "agent");
  if (!log.enabled) return;
  try {
    const r = await machine.transport.exec(["tail", "-c", String(AGENT_LOG_TAIL_BYTES), "--", posix.join(runDir, "agent.log")]);
    if (r.exitCode !== 0) {
      log.debug(`${machine.address}: no agent log in ${runDir} (${r.stderrTail.trim()})`, { host: machine.address });
      return;
    }
    for (const line of r.stdout.split("\n")) if (line.trim() !== "") log.debug(`${machine.address}: ${line}`, { host: machine.address, runDir });
  } catch (err) {
    log.debug(`${machine.address}: could not read the agent log in ${runDir}: ${(err as Error).message}`, { host: machine.address });
  }
}
