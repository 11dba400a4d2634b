/**
 * Variables of this process that commands on the local machine still get: what describes the
 * machine and the user's session (where programs are, home, user, locale, time zone, terminal,
 * temporary folder). Everything else, credentials such as `AWS_*` or tokens included, stays with
 * the client; a run passes what it needs with `.env()`.
 */
export const LOCAL_BASE_ENV: readonly string[] = ["PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR"];

/**
 * The minimal environment of a command run on the local machine: the {@link LOCAL_BASE_ENV}
 * variables and every locale variable (`LC_*`) of `source`.
 *
 * @param source - The environment to take them from. @defaultValue `process.env`
 * @example
 * ```ts
 * localBaseEnv({ PATH: "/usr/bin", AWS_SECRET_ACCESS_KEY: "x", LC_ALL: "C" }); // { PATH: "/usr/bin", LC_ALL: "C" }
 * ```
 */
export function localBaseEnv(source: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(source)) {
    if (value !== undefined && (LOCAL_BASE_ENV.includes(name) || name.startsWith("LC_"))) env[name] = value;
  }
  return env;
}
