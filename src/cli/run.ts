/** Shared start-up of the three commands: parse argv (exit 0/2 as argparse), set up the logger. */
import { tryParseCommandLine, type CommandSpec } from './argv.js';
import { createLogger, type Logger } from '../log/logger.js';
import { resolvePassword, restrictUmask } from '../util/safe-defaults.js';

export interface Parsed {
  values: Record<string, unknown>;
  given: ReadonlySet<string>;
}

/** Parse the command line; on help/version/usage errors print and exit like argparse. */
export function parseOrExit(spec: CommandSpec, argv: readonly string[]): Parsed {
  const r = tryParseCommandLine(spec, argv);
  if (r.kind === 'ok') return { values: r.values, given: r.given };
  if (r.stdout) process.stdout.write(r.stdout);
  if (r.stderr) process.stderr.write(r.stderr);
  process.exit(r.code);
}

export function commandLogger(component: string, v: Record<string, unknown>, logFile: string | undefined, writeStderr?: (text: string) => void): Logger {
  return createLogger({
    component,
    logFile,
    writeStderr,
    stderr: v.quiet !== true,
    color: v.nocolor !== true && process.stderr.isTTY === true,
    verbose: v.verbose === true,
    syslog: v.syslog === true,
  });
}

/** The command line for the log, with --password's value replaced (D31). */
export function redactedArgs(argv: readonly string[]): string {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--password' || (a.length > 3 && '--password'.startsWith(a) && a.startsWith('--pa'))) {
      out.push(a, '***');
      i++;
    } else if (a.startsWith('--password=') || /^--pa[a-z]*=/.test(a)) out.push(`${a.slice(0, a.indexOf('='))}=***`);
    else out.push(a);
  }
  return out.join(' ');
}

/**
 * Safe defaults for a command that writes backup data or images (src/util/safe-defaults.ts):
 * private files (umask), and the libvirt password from --password, --password-file or the
 * environment (kept out of argv). A conflict or an unreadable password file is a usage error.
 */
export function secureStartOrExit(command: string, v: Record<string, unknown>): { password?: string; warning?: string } {
  restrictUmask();
  try {
    const { password, warning } = resolvePassword({ password: v['password'] as string | undefined, passwordFile: v['passwordFile'] as string | undefined });
    return { password, warning };
  } catch (e) {
    process.stderr.write(`${command}: error: ${(e as Error).message}\n`);
    process.exit(2);
  }
}
