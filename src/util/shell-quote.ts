/**
 * Quotes one argument for a POSIX shell (`sh`, `bash`, `dash`, `zsh`) so that the shell passes it to the
 * command byte for byte: wrapped in single quotes, with each `'` written as `'\''`. Empty strings become
 * `''`; newlines, `$`, backquotes, `;`, globs and spaces need no special care inside single quotes.
 * Arguments made only of safe characters (`A-Z a-z 0-9 _ - . / , : = @ % +`) are returned unchanged,
 * which keeps logged commands readable.
 *
 * @param arg - The argument to quote. It must not contain a NUL byte (no POSIX argument can).
 * @returns The quoted argument.
 * @throws TypeError when `arg` contains a NUL byte.
 *
 * @example
 * ```ts
 * shellQuote("it's $HOME");   // => 'it'\''s $HOME'
 * shellQuote("");             // => ''
 * shellQuote("train.py");     // => train.py
 * ```
 */
export function shellQuote(arg: string): string {
  if (arg.includes("\0")) throw new TypeError("A shell argument cannot contain a NUL byte.");
  if (arg !== "" && /^[A-Za-z0-9_\-./,:=@%+]+$/.test(arg)) return arg;
  return `'${arg.replaceAll("'", `'\\''`)}'`;
}

/**
 * Joins an argv array into one POSIX shell command line, quoting every element with {@link shellQuote}.
 * `sh -c "$(shellJoin(argv))"` runs exactly `argv`.
 *
 * @param argv - Program and arguments.
 * @returns The command line.
 * @throws TypeError when an element contains a NUL byte.
 *
 * @example
 * ```ts
 * shellJoin(["python3", "-c", "print('hi')"]); // => python3 -c 'print('\''hi'\'')'
 * ```
 */
export function shellJoin(argv: readonly string[]): string {
  return argv.map(shellQuote).join(" ");
}
