/**
 * Log records for the three commands (BEHAVIOUR.md §7.4, CLI.md §1.3).
 *
 * Line format: `[YYYY-MM-DD HH:MM:SS] LEVEL component: message` (local time). Records go to
 * stderr (coloured by level unless disabled) and, never coloured, to an optional log file that
 * is opened for append and written synchronously record by record, so a crash loses nothing
 * that was logged. Warnings and errors are counted explicitly (D34): the exit status (and
 * `--strict`) is derived from {@link Logger.counts}, shared by a logger and all its children.
 *
 * Syslog (`-L/--syslog`): the local syslog socket /dev/log is a unix *datagram* socket, which
 * Node.js cannot write to (dgram has no unix-domain support, net only does stream sockets), and
 * spawning logger(1) per record is not acceptable. The option is accepted; a one-time warning
 * says that syslog output is not available (that notice is not counted as a warning).
 */
import { closeSync, constants as fsConstants, openSync, writeSync } from 'node:fs';

/** Append, create 0600, never through a symlink (issue 10: a planted log-name link is refused with ELOOP). */
const LOG_FLAGS = fsConstants.O_WRONLY | fsConstants.O_APPEND | fsConstants.O_CREAT | fsConstants.O_NOFOLLOW;

export type LogLevel = 'DEBUG' | 'INFO' | 'WARNING' | 'ERROR' | 'CRITICAL';

export interface LogCounts {
  warnings: number;
  /** ERROR and CRITICAL records. */
  errors: number;
}

export interface LoggerOptions {
  /** Component shown after the level (`INFO virtnbdbackup: ...`); omitted when undefined. */
  component?: string;
  /** Append records to this file (created if missing). */
  logFile?: string;
  /** Write records to stderr (false for --quiet). */
  stderr: boolean;
  /** Colour stderr records by level (false with --nocolor or when stderr is not a TTY). */
  color: boolean;
  /** Emit DEBUG records. */
  verbose: boolean;
  /** Also log to syslog — not available in this version, see the module comment. */
  syslog?: boolean;
  /** Clock (tests). */
  now?: () => Date;
  /** Stderr writer (tests). Default: process.stderr.write. */
  writeStderr?: (text: string) => void;
}

export interface Logger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
  critical(message: string): void;
  /** A logger for another component sharing sinks and counts. */
  child(component: string): Logger;
  /** Warnings and errors logged so far by this logger and its family. */
  readonly counts: LogCounts;
  readonly logFile: string | undefined;
  /** Close the log file (idempotent; later records still go to stderr). */
  close(): Promise<void>;
}

const COLORS: Record<LogLevel, string> = {
  DEBUG: '\x1b[90m',
  INFO: '',
  WARNING: '\x1b[33m',
  ERROR: '\x1b[31m',
  CRITICAL: '\x1b[1;31m',
};
const RESET = '\x1b[0m';

const pad = (n: number) => String(n).padStart(2, '0');

/** `YYYY-MM-DD HH:MM:SS` in local time. */
export function formatTimestamp(d: Date): string {
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

/** One record without colour and without the trailing newline. */
export function formatRecord(date: Date, level: LogLevel, component: string | undefined, message: string): string {
  return `[${formatTimestamp(date)}] ${level} ${component ? `${component}: ` : ''}${message}`;
}

/** What a logger family shares. */
interface Sink {
  opts: LoggerOptions;
  fd: number | undefined;
  fileFailed: boolean;
  counts: LogCounts;
  writeStderr: (text: string) => void;
  now: () => Date;
}

function emit(sink: Sink, level: LogLevel, component: string | undefined, message: string, count: boolean): void {
  if (level === 'DEBUG' && !sink.opts.verbose) return;
  if (count) {
    if (level === 'WARNING') sink.counts.warnings++;
    else if (level === 'ERROR' || level === 'CRITICAL') sink.counts.errors++;
  }
  const line = formatRecord(sink.now(), level, component, message);
  if (sink.fd !== undefined) {
    try {
      writeSync(sink.fd, `${line}\n`);
    } catch (e) {
      if (!sink.fileFailed) {
        sink.fileFailed = true;
        sink.writeStderr(`${formatRecord(sink.now(), 'ERROR', component, `Unable to write log file [${sink.opts.logFile}]: ${(e as Error).message}`)}\n`);
      }
    }
  }
  if (sink.opts.stderr) {
    const color = sink.opts.color ? COLORS[level] : '';
    sink.writeStderr(color ? `${color}${line}${RESET}\n` : `${line}\n`);
  }
}

function makeLogger(sink: Sink, component: string | undefined): Logger {
  return {
    debug: (m) => emit(sink, 'DEBUG', component, m, true),
    info: (m) => emit(sink, 'INFO', component, m, true),
    warn: (m) => emit(sink, 'WARNING', component, m, true),
    error: (m) => emit(sink, 'ERROR', component, m, true),
    critical: (m) => emit(sink, 'CRITICAL', component, m, true),
    child: (c) => makeLogger(sink, c),
    counts: sink.counts,
    logFile: sink.opts.logFile,
    close: async () => {
      if (sink.fd !== undefined) {
        const fd = sink.fd;
        sink.fd = undefined;
        closeSync(fd);
      }
    },
  };
}

/**
 * Create the root logger of a run. Throws if the log file cannot be opened for append (the
 * caller reports it; the original failed the same way).
 */
export function createLogger(opts: LoggerOptions): Logger {
  const sink: Sink = {
    opts,
    fd: opts.logFile !== undefined ? openSync(opts.logFile, LOG_FLAGS, 0o600) : undefined,
    fileFailed: false,
    counts: { warnings: 0, errors: 0 },
    writeStderr: opts.writeStderr ?? ((s) => void process.stderr.write(s)),
    now: opts.now ?? (() => new Date()),
  };
  if (opts.syslog) {
    emit(sink, 'WARNING', opts.component, 'Syslog output is not available in this version: logging to stderr and the log file only.', false);
  }
  return makeLogger(sink, opts.component);
}
