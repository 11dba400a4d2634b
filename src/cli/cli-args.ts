import { parseArgs } from "node:util";
import { UsageError } from "./cli-errors.js";

/**
 * The commands, in the order help lists them.
 *
 * @example
 * ```ts
 * for (const name of COMMAND_NAMES) console.log(helpText(name));
 * ```
 */
export const COMMAND_NAMES = ["quickstart", "ls", "logs", "attach", "checkpoints", "cancel", "sweep", "plan", "doctor"] as const;

/**
 * One of {@link COMMAND_NAMES}.
 *
 * @example
 * ```ts
 * const command: CommandName = "logs";
 * ```
 */
export type CommandName = (typeof COMMAND_NAMES)[number];

/**
 * How `runctl cancel` stops a run: the SDK's `CancelStrategy` less `detach`, which from another
 * process has nothing to detach (Ctrl-C on `logs -f` or `attach` is the CLI's detach).
 *
 * @example
 * ```ts
 * const strategy: CliCancelStrategy = "interrupt";
 * ```
 */
export type CliCancelStrategy = "interrupt" | "kill";

/**
 * A parsed command line. Every command has `json`; the rest is per command.
 *
 * @example
 * ```ts
 * const parsed = parseCliArgs(["logs", "20261121-152117-utfo5u", "-f"]);
 * if (parsed.kind === "logs") console.log(parsed.runId, parsed.follow);
 * ```
 */
export type ParsedCli =
  | { readonly kind: "help"; readonly command: CommandName | undefined }
  | { readonly kind: "version"; readonly json: boolean }
  | { readonly kind: "quickstart"; readonly json: boolean; readonly dir: string | undefined; readonly steps: number | undefined }
  | { readonly kind: "ls"; readonly json: boolean }
  | { readonly kind: "logs"; readonly json: boolean; readonly runId: string; readonly follow: boolean }
  | { readonly kind: "attach"; readonly json: boolean; readonly runId: string }
  | { readonly kind: "checkpoints"; readonly json: boolean; readonly runId: string; readonly verify: boolean }
  | { readonly kind: "cancel"; readonly json: boolean; readonly runId: string; readonly strategy: CliCancelStrategy }
  | { readonly kind: "sweep"; readonly json: boolean; readonly dryRun: boolean; readonly force: boolean; readonly region: string | undefined; readonly owner: string | undefined }
  | { readonly kind: "plan"; readonly json: boolean; readonly file: string }
  | { readonly kind: "doctor"; readonly json: boolean; readonly file: string | undefined; readonly host: string | undefined; readonly identity: string | undefined };

type OptionSpec = Record<string, { type: "boolean" | "string"; short?: string | undefined }>;

// Flags every command takes; per-command flags are added below. No flag without an effect.
const COMMON: OptionSpec = { json: { type: "boolean" }, help: { type: "boolean", short: "h" } };
const COMMAND_OPTIONS: Record<CommandName, OptionSpec> = {
  quickstart: { dir: { type: "string" }, steps: { type: "string" } },
  ls: {},
  logs: { follow: { type: "boolean", short: "f" } },
  attach: {},
  checkpoints: { verify: { type: "boolean" } },
  cancel: { strategy: { type: "string" } },
  sweep: { "dry-run": { type: "boolean" }, force: { type: "boolean" }, region: { type: "string" }, owner: { type: "string" } },
  plan: {},
  doctor: { host: { type: "string" }, identity: { type: "string" } },
};
// The one positional each command takes, if any (named as in its usage line).
const POSITIONAL: Record<CommandName, string | undefined> = { quickstart: undefined, ls: undefined, logs: "RUN", attach: "RUN", checkpoints: "RUN", cancel: "RUN", sweep: undefined, plan: "FILE", doctor: "FILE" };
// Commands whose positional may be left out (doctor: this machine).
const OPTIONAL_POSITIONAL: ReadonlySet<CommandName> = new Set(["doctor"]);

const STRATEGIES: readonly CliCancelStrategy[] = ["interrupt", "kill"];

/** Same rule as `Runctl.attach`: a run id is a folder name, never a path. */
const RUN_ID = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;

/**
 * Whether the command line asks for JSON output, read before parsing so that even a usage error is
 * reported as a JSON document.
 *
 * @example
 * ```ts
 * wantsJson(["ls", "--bogus", "--json"]); // true
 * ```
 */
export function wantsJson(argv: readonly string[]): boolean {
  const end = argv.indexOf("--");
  return (end === -1 ? argv : argv.slice(0, end)).includes("--json");
}

/**
 * Parses `runctl` arguments (without the node and script paths) strictly with `node:util`'s
 * `parseArgs`: an unknown command or flag, a missing or extra argument, or a bad value throws a
 * {@link UsageError} (exit code 2).
 *
 * @example
 * ```ts
 * parseCliArgs(["cancel", "20261121-152117-utfo5u", "--strategy", "kill"]);
 * // { kind: "cancel", runId: "20261121-152117-utfo5u", strategy: "kill", json: false }
 * ```
 */
export function parseCliArgs(argv: readonly string[]): ParsedCli {
  const [first, ...rest] = argv;
  if (first === undefined) throw new UsageError("missing command");
  if (first === "--help" || first === "-h" || first === "help") {
    if (first === "help" && rest.length === 1 && rest[0] !== undefined) return { kind: "help", command: commandName(rest[0]) };
    if (rest.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(rest[0])} after ${first}`);
    return { kind: "help", command: undefined };
  }
  if (first === "--version" || first === "-V") {
    const extra = rest.filter((a) => a !== "--json");
    if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])} after ${first}`);
    return { kind: "version", json: rest.includes("--json") };
  }
  if (first.startsWith("-")) throw new UsageError(`unknown option ${JSON.stringify(first)}; the command comes first (runctl <command> [flags])`);
  const command = commandName(first);
  const values = parseCommand(command, rest);
  if (values.help) return { kind: "help", command };
  return build(command, values);
}

function commandName(word: string): CommandName {
  if ((COMMAND_NAMES as readonly string[]).includes(word)) return word as CommandName;
  throw new UsageError(`unknown command ${JSON.stringify(word)}; commands: ${COMMAND_NAMES.join(", ")}`);
}

interface CommandValues {
  readonly flags: Readonly<Record<string, string | boolean | undefined>>;
  readonly positionals: readonly string[];
  readonly help: boolean;
}

function parseCommand(command: CommandName, args: readonly string[]): CommandValues {
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({ args: [...args], options: { ...COMMON, ...COMMAND_OPTIONS[command] }, strict: true, allowPositionals: true }) as typeof parsed;
  } catch (err) {
    // parseArgs explains itself well ("Unknown option '--x'..."); keep its words, add the command.
    throw new UsageError(`${command}: ${(err as Error).message}`);
  }
  return { flags: parsed.values, positionals: parsed.positionals, help: parsed.values["help"] === true };
}

function build(command: CommandName, { flags, positionals }: CommandValues): ParsedCli {
  const json = flags["json"] === true;
  const name = POSITIONAL[command];
  if (name === undefined && positionals.length > 0) throw new UsageError(`${command} takes no arguments, got ${JSON.stringify(positionals[0])}`);
  if (name !== undefined && positionals.length === 0 && !OPTIONAL_POSITIONAL.has(command)) throw new UsageError(`${command} needs ${name}`);
  if (positionals.length > 1) throw new UsageError(`${command} takes one ${name}, got ${positionals.length} arguments`);
  const arg = positionals[0] ?? "";
  if (name === "RUN" && !RUN_ID.test(arg)) throw new UsageError(`${JSON.stringify(arg)} is not a run id (letters, digits, - and _)`);
  if (name === "FILE" && arg === "" && positionals.length > 0) throw new UsageError(`${command} needs a non-empty FILE`);
  const text = (flag: string): string | undefined => {
    const value = flags[flag];
    if (typeof value !== "string") return undefined;
    if (value.trim() === "") throw new UsageError(`${command}: --${flag} needs a value`);
    return value;
  };
  switch (command) {
    case "quickstart": {
      const steps = text("steps");
      // Whole steps only: the trainer would reject "1e3" or "10.5" after the run had started.
      if (steps !== undefined && !/^[1-9][0-9]{0,6}$/.test(steps)) throw new UsageError(`quickstart: --steps must be a whole number from 1 to 9999999, got ${JSON.stringify(steps)}`);
      return { kind: "quickstart", json, dir: text("dir"), steps: steps === undefined ? undefined : Number(steps) };
    }
    case "ls":
      return { kind: "ls", json };
    case "logs":
      return { kind: "logs", json, runId: arg, follow: flags["follow"] === true };
    case "attach":
      return { kind: "attach", json, runId: arg };
    case "checkpoints":
      return { kind: "checkpoints", json, runId: arg, verify: flags["verify"] === true };
    case "cancel": {
      const strategy = text("strategy") ?? "interrupt";
      if (strategy === "detach") {
        // Never accept a flag that would do nothing: the process following the run is not this one.
        throw new UsageError("cancel: --strategy detach would do nothing here (this process does not follow the run; it goes on either way); use interrupt or kill, or Ctrl-C a `runctl logs -f` / `runctl attach` to stop following");
      }
      if (!(STRATEGIES as readonly string[]).includes(strategy)) throw new UsageError(`cancel: --strategy must be one of ${STRATEGIES.join(", ")}, got ${JSON.stringify(strategy)}`);
      return { kind: "cancel", json, runId: arg, strategy: strategy as CliCancelStrategy };
    }
    case "sweep":
      return { kind: "sweep", json, dryRun: flags["dry-run"] === true, force: flags["force"] === true, region: text("region"), owner: text("owner") };
    case "plan":
      return { kind: "plan", json, file: arg };
    case "doctor": {
      const host = text("host");
      const identity = text("identity");
      if (host !== undefined && positionals.length > 0) throw new UsageError("doctor: give FILE or --host, not both");
      if (identity !== undefined && host === undefined) throw new UsageError("doctor: --identity goes with --host");
      return { kind: "doctor", json, file: positionals.length > 0 ? arg : undefined, host, identity };
    }
  }
}
