/**
 * Shell quoting for commands run on the remote host through ssh (BEHAVIOUR.md §8, D27): ssh hands
 * the remote shell one command string, so every argument is single-quoted — nothing a path or a
 * domain name contains (spaces, quotes, `$`, `;`, newlines) is interpreted by the remote shell.
 */

/** One argument as a POSIX shell word: `'…'`, an embedded `'` written as `'\''`. */
export function shellQuote(arg: string): string {
  if (arg.includes('\0')) throw new Error('A remote command argument cannot contain a NUL byte');
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** An argument vector as one command line for the remote shell, every word quoted. */
export function shellCommand(argv: readonly string[]): string {
  if (argv.length === 0) throw new Error('Empty remote command');
  return argv.map(shellQuote).join(' ');
}
