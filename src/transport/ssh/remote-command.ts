import { RunctlError } from "../../errors/runctl-error.js";
import { shellJoin, shellQuote } from "../shell-quote.js";
import type { Command, ExecOptions } from "../types.js";

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Builds the command line an SSH server hands to the login shell (`$SHELL -c LINE`; any POSIX shell):
 * `cd <cwd> && export K=V ... && exec <argv>` with every word quoted, or `exec sh -c <script>` for a
 * script. `exec` makes the command the session's own process, so a signal (an abort) reaches it and a
 * signal death is reported as such.
 *
 * @param command - argv or `{ script }`.
 * @param options - `cwd` and `env` of the exec.
 * @returns The command line.
 * @throws RunctlError INVALID_ARGUMENT for an empty argv, a NUL byte, or an invalid variable name.
 *
 * @example
 * ```ts
 * buildRemoteCommand(["python3", "train.py"], { cwd: "/srv/run", env: { LR: "0.1" } });
 * // => "cd /srv/run && export LR=0.1 && exec python3 train.py"
 * ```
 */
export function buildRemoteCommand(command: Command, options: Pick<ExecOptions, "cwd" | "env"> = {}): string {
  let core: string;
  try {
    if ("script" in command) {
      core = `exec sh -c ${shellQuote(command.script)}`;
    } else {
      if (command.length === 0) throw new RunctlError("INVALID_ARGUMENT", "exec needs a non-empty argv.");
      core = `exec ${shellJoin(command)}`;
    }
    const parts: string[] = [];
    if (options.cwd !== undefined) {
      if (options.cwd === "") throw new RunctlError("INVALID_ARGUMENT", "exec cwd must not be empty.");
      parts.push(`cd ${shellQuote(options.cwd)}`);
    }
    const env = Object.entries(options.env ?? {});
    if (env.length > 0) {
      for (const [name] of env) {
        if (!ENV_NAME.test(name)) throw new RunctlError("INVALID_ARGUMENT", `Invalid environment variable name ${JSON.stringify(name)}: use letters, digits and _, not starting with a digit.`);
      }
      parts.push(`export ${env.map(([name, value]) => `${name}=${shellQuote(value)}`).join(" ")}`);
    }
    parts.push(core);
    return parts.join(" && ");
  } catch (e) {
    if (e instanceof TypeError) throw new RunctlError("INVALID_ARGUMENT", `exec: ${e.message}`, { cause: e });
    throw e;
  }
}

/**
 * The command as a user would read it, for messages: the argv joined with quoting, or the script.
 *
 * @example
 * ```ts
 * describeCommand(["echo", "a b"]); // "echo 'a b'"
 * ```
 */
export function describeCommand(command: Command): string {
  if ("script" in command) return command.script;
  return command.map((a) => (a.includes("\0") ? JSON.stringify(a) : shellQuote(a))).join(" ");
}
