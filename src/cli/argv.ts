/**
 * argparse-compatible command-line front end on top of commander (CLI.md §1).
 *
 * The original tools used Python's argparse; scripts and cron lines written for them must keep
 * working. commander alone differs in many details (no prefix abbreviation, exit code 1,
 * different bundling and value rules), so parsing happens in two steps:
 *
 *  1. an argparse-faithful scanner walks argv exactly as argparse classifies and consumes it:
 *     long-option prefixes with the §1.2 resolution order, `--opt=value`, bundled short flags,
 *     attached values, the optional `-z [LEVEL]`, negative numbers as values, type and choice
 *     checks in command-line order, `-h`/`-V` acted on when reached, required options and stray
 *     words reported at the end;
 *  2. the accepted options are handed to commander as canonical `--long=value` words; commander
 *     stores them and renders the grouped help.
 *
 * Every usage error prints a usage synopsis and `<prog>: error: <message>` on stderr and exits 2.
 * Output and exit go through an injectable {@link CliIO} so that tests can capture them.
 */
import { Command, CommanderError, Option } from 'commander';

export type OptionKind = 'flag' | 'string' | 'int' | 'choice' | 'optionalInt';

export interface OptionSpec {
  /** Short option, `-d` (the leading dash may be omitted). */
  short?: string;
  /** Long option, `--domain` (the leading dashes may be omitted). */
  long: string;
  kind: OptionKind;
  /** Allowed values of a `choice` option. */
  choices?: readonly string[];
  /** Value when the option is not given (flags: false unless set). */
  default?: unknown;
  /** How the default is shown in --help when it is not the literal value ("number of disks"). */
  defaultText?: string;
  required?: boolean;
  help: string;
  /** false = our extension: loses prefix matches against original options (CLI.md §1.2). */
  original: boolean;
  /** Name of the value in usage and help (default: long name upper-cased). */
  metavar?: string;
  /** Help group heading, e.g. "General options". */
  group?: string;
  /** Key in the parse result (default: camelCase of the long name). */
  dest?: string;
  /** `optionalInt`: value of the bare option (`-z` alone). Default 1. */
  const?: number;
  /** `int` / `optionalInt`: inclusive range; outside it is a usage error. */
  min?: number;
  max?: number;
  /** A flag that prints help / the version and exits 0 as soon as it is reached. */
  action?: 'help' | 'version';
}

export interface CommandSpec {
  prog: string;
  description: string;
  /** Printed alone by the `version` action. */
  version: string | (() => string);
  options: OptionSpec[];
  /** Appended to --help (e.g. "Examples:\n  ..."). */
  epilog?: string;
  /**
   * Cross-option checks after parsing. Return a message to report it as a usage error (exit 2).
   * `given` holds the dest keys of the options present on the command line.
   */
  validate?: (values: Record<string, unknown>, given: ReadonlySet<string>) => string | undefined;
}

/** Where parseCommandLine writes and how it exits. `exit` should not return. */
export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  exit: (code: number) => void;
}

/** Thrown by parseCommandLine when the injected `exit` returns instead of ending the process. */
export class CliExit extends Error {
  constructor(public readonly code: number) {
    super(`exit ${code}`);
    this.name = 'CliExit';
  }
}

/** Result of {@link tryParseCommandLine}: parsed values, or the output and code of an exit. */
export type ParseOutcome =
  | { kind: 'ok'; values: Record<string, unknown>; given: Set<string> }
  | { kind: 'exit'; code: number; stdout: string; stderr: string };

class UsageError extends Error {}
class EarlyExit extends Error {
  constructor(public readonly stdoutText: string) {
    super('early exit');
  }
}

// ------------------------------------------------------------------------------------------
// option lookup

const strip = (s: string) => s.replace(/^-+/, '');
export const longName = (o: OptionSpec) => `--${strip(o.long)}`;
export const shortName = (o: OptionSpec) => (o.short ? `-${strip(o.short)}` : undefined);
const camel = (s: string) => s.replace(/-([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
export const destOf = (o: OptionSpec) => o.dest ?? camel(strip(o.long));
const takesValue = (o: OptionSpec) => o.kind !== 'flag';

/** argparse's name of an action in messages: `-d/--domain`, `--tls`. */
export function actionName(o: OptionSpec): string {
  const s = shortName(o);
  return s ? `${s}/${longName(o)}` : longName(o);
}

export function metavarOf(o: OptionSpec): string {
  if (o.metavar) return o.metavar;
  if (o.kind === 'choice' && o.choices) return `{${o.choices.join(',')}}`;
  return strip(o.long).toUpperCase().replace(/-/g, '_');
}

export type LongResolution =
  | { kind: 'match'; option: OptionSpec; exact: boolean }
  | { kind: 'ambiguous'; candidates: OptionSpec[] }
  | { kind: 'none' };

/**
 * Resolve a long option name (`--dom`, without `=value`) per CLI.md §1.2: exact name; else the
 * only *original* option with that prefix; else the only option of any kind; else ambiguous.
 */
export function resolveLongOption(options: readonly OptionSpec[], name: string): LongResolution {
  const exact = options.find((o) => longName(o) === name);
  if (exact) return { kind: 'match', option: exact, exact: true };
  const candidates = options.filter((o) => longName(o).startsWith(name));
  if (candidates.length === 0) return { kind: 'none' };
  const originals = candidates.filter((o) => o.original);
  if (originals.length === 1) return { kind: 'match', option: originals[0], exact: false };
  if (originals.length === 0 && candidates.length === 1) return { kind: 'match', option: candidates[0], exact: false };
  return { kind: 'ambiguous', candidates };
}

// ------------------------------------------------------------------------------------------
// scanning (argparse's classification and consumption)

/** One classified word: a value/stray word ('A'), `--`, or an option word ('O'). */
type Word =
  | { t: 'A'; text: string }
  | { t: '--'; text: string }
  | { t: 'O'; text: string; option?: OptionSpec; used: string; explicit?: string };

const NEGATIVE_NUMBER = /^-\d+$|^-\d*\.\d+$/;

function classify(options: readonly OptionSpec[], arg: string): Word {
  if (arg === '' || arg[0] !== '-' || arg === '-') return { t: 'A', text: arg };
  if (arg === '--') return { t: '--', text: arg };
  const byShort = (s: string) => options.find((o) => shortName(o) === s);
  if (arg.startsWith('--')) {
    const eq = arg.indexOf('=');
    const name = eq >= 0 ? arg.slice(0, eq) : arg;
    const explicit = eq >= 0 ? arg.slice(eq + 1) : undefined;
    const r = resolveLongOption(options, name);
    if (r.kind === 'match') return { t: 'O', text: arg, option: r.option, used: longName(r.option), explicit };
    if (r.kind === 'ambiguous') {
      throw new UsageError(`ambiguous option: ${name} could match ${r.candidates.map(longName).join(', ')}`);
    }
  } else {
    const exact = byShort(arg);
    if (exact) return { t: 'O', text: arg, option: exact, used: arg };
    const eq = arg.indexOf('=');
    if (eq >= 0) {
      const o = byShort(arg.slice(0, eq));
      if (o) return { t: 'O', text: arg, option: o, used: arg.slice(0, eq), explicit: arg.slice(eq + 1) };
    }
    const o = byShort(arg.slice(0, 2));
    if (o) return { t: 'O', text: arg, option: o, used: arg.slice(0, 2), explicit: arg.slice(2) };
  }
  if (NEGATIVE_NUMBER.test(arg)) return { t: 'A', text: arg };
  if (arg.includes(' ')) return { t: 'A', text: arg };
  return { t: 'O', text: arg, used: arg }; // unknown option
}

function convert(o: OptionSpec, raw: string): unknown {
  const err = (msg: string) => new UsageError(`argument ${actionName(o)}: ${msg}`);
  switch (o.kind) {
    case 'string':
      return raw;
    case 'choice':
      if (!o.choices?.includes(raw)) {
        throw err(`invalid choice: '${raw}' (choose from ${(o.choices ?? []).map((c) => `'${c}'`).join(', ')})`);
      }
      return raw;
    case 'int':
    case 'optionalInt': {
      if (!/^[+-]?\d+$/.test(raw)) throw err(`invalid int value: '${raw}'`);
      const n = Number(raw);
      const lo = o.min;
      const hi = o.max;
      if ((lo !== undefined && n < lo) || (hi !== undefined && n > hi)) {
        const range =
          lo !== undefined && hi !== undefined ? `between ${lo} and ${hi}` : lo !== undefined ? `at least ${lo}` : `at most ${hi}`;
        throw err(`invalid value: '${raw}' (must be ${range})`);
      }
      return n;
    }
    default:
      return true;
  }
}

interface Scan {
  /** Options in command-line order with their converted values (last wins when stored). */
  actions: { option: OptionSpec; value: unknown }[];
  extras: string[];
}

function scan(spec: CommandSpec, argv: readonly string[], version: () => string, help: () => string): Scan {
  const options = spec.options;
  // argparse classifies every word before consuming any (ambiguity is reported first)
  const words: Word[] = [];
  let rest = false;
  for (const arg of argv) {
    if (rest) words.push({ t: 'A', text: arg });
    else {
      const w = classify(options, arg);
      if (w.t === '--') rest = true;
      words.push(w);
    }
  }

  const actions: Scan['actions'] = [];
  const extras: string[] = [];
  const act = (option: OptionSpec, value: unknown) => {
    if (option.action === 'help') throw new EarlyExit(help());
    if (option.action === 'version') throw new EarlyExit(`${version()}\n`);
    actions.push({ option, value });
  };

  for (let i = 0; i < words.length; i++) {
    const w = words[i];
    if (w.t === '--') {
      // end of options; there are no positional arguments, so argparse reports `--` and
      // anything after it as unrecognized
      for (const x of words.slice(i)) extras.push(x.text);
      break;
    }
    if (w.t === 'A' || !w.option) {
      extras.push(w.text);
      continue;
    }
    // argparse first collects the whole bundle (`-nd vm1`, `-ndvm1`), then acts on it in order
    const bundle: { option: OptionSpec; raw?: string }[] = [];
    let option = w.option;
    let used = w.used;
    let explicit = w.explicit;
    for (;;) {
      if (explicit !== undefined) {
        if (!takesValue(option)) {
          // a flag followed by more letters in a bundle: the next letter is the next option
          if (!used.startsWith('--') && explicit !== '') {
            bundle.push({ option });
            const next = options.find((o) => shortName(o) === `-${explicit![0]}`);
            if (!next) throw new UsageError(`argument ${actionName(option)}: ignored explicit argument '${explicit}'`);
            option = next;
            used = `-${explicit[0]}`;
            explicit = explicit.length > 1 ? explicit.slice(1) : undefined;
            continue;
          }
          throw new UsageError(`argument ${actionName(option)}: ignored explicit argument '${explicit}'`);
        }
        bundle.push({ option, raw: explicit });
        break;
      }
      if (!takesValue(option)) {
        bundle.push({ option });
        break;
      }
      const next = words[i + 1];
      if (next && next.t === 'A') {
        i++;
        bundle.push({ option, raw: next.text });
      } else if (option.kind === 'optionalInt') {
        bundle.push({ option });
      } else {
        throw new UsageError(`argument ${actionName(option)}: expected one argument`);
      }
      break;
    }
    for (const b of bundle) {
      const value = !takesValue(b.option) ? true : b.raw === undefined ? (b.option.const ?? 1) : convert(b.option, b.raw);
      act(b.option, value);
    }
  }
  return { actions, extras };
}

// ------------------------------------------------------------------------------------------
// usage, help, commander

/** argparse-style synopsis, wrapped: `usage: prog [-h] -d NAME [-l {copy,full}] ...`. */
export function formatUsage(spec: CommandSpec, width = 80): string {
  const parts = spec.options.map((o) => {
    const flag = shortName(o) ?? longName(o);
    let p = flag;
    if (o.kind === 'optionalInt') p += ` [${metavarOf(o)}]`;
    else if (takesValue(o)) p += ` ${metavarOf(o)}`;
    return o.required ? p : `[${p}]`;
  });
  const head = `usage: ${spec.prog} `;
  const indent = ' '.repeat(head.length);
  const lines: string[] = [];
  let line = head;
  for (const p of parts) {
    if (line.length > head.length && line.length + 1 + p.length > width) {
      lines.push(line.trimEnd());
      line = indent;
    }
    line += (line === head || line === indent ? '' : ' ') + p;
  }
  lines.push(line);
  return `${lines.join('\n')}\n`;
}

function commanderFlags(o: OptionSpec): string {
  const s = shortName(o);
  let f = s ? `${s}, ${longName(o)}` : longName(o);
  if (o.kind === 'optionalInt') f += ` [${metavarOf(o)}]`;
  else if (takesValue(o)) f += ` <${metavarOf(o)}>`;
  return f;
}

function defaultText(o: OptionSpec): string | undefined {
  if (o.defaultText !== undefined) return o.defaultText;
  if (o.default === undefined || o.default === null || o.kind === 'flag') return undefined;
  if (o.default === '') return "''";
  return String(o.default);
}

/** The commander program for a spec (help rendering and value storage). */
export function buildCommand(spec: CommandSpec, sink?: { out: (s: string) => void; err: (s: string) => void }): Command {
  const cmd = new Command(spec.prog);
  cmd
    .description(spec.description)
    .configureHelp({ commandUsage: () => formatUsage(spec).replace(/^usage: /, '').trimEnd() })
    .helpOption(false)
    .allowExcessArguments(false)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => sink?.out(s),
      writeErr: (s) => sink?.err(s),
      outputError: () => undefined,
    });
  for (const o of spec.options) {
    const opt = new Option(commanderFlags(o), o.help);
    // commander treats --no-x as the negation of --x; ours are plain flags (--no-sparse-detection)
    opt.negate = false;
    if (o.group) opt.helpGroup(`${o.group}:`);
    if (o.kind === 'choice' && o.choices) opt.choices(o.choices);
    const dt = defaultText(o);
    if (dt !== undefined) opt.default(o.default, dt);
    if (o.kind === 'int' || o.kind === 'optionalInt') opt.argParser((v: string) => Number(v));
    cmd.addOption(opt);
  }
  return cmd;
}

/** The full --help text: usage, description, grouped options with defaults, epilog. */
export function formatHelp(spec: CommandSpec): string {
  const text = buildCommand(spec).helpInformation();
  return spec.epilog ? `${text}\n${spec.epilog.replace(/\n*$/, '')}\n` : text;
}

function errorText(spec: CommandSpec, message: string): string {
  return `${formatUsage(spec)}${spec.prog}: error: ${message}\n`;
}

// ------------------------------------------------------------------------------------------
// entry points

/** Parse without exiting: the values, or what would have been printed and the exit code. */
export function tryParseCommandLine(spec: CommandSpec, argv: readonly string[]): ParseOutcome {
  const version = () => (typeof spec.version === 'function' ? spec.version() : spec.version);
  try {
    const { actions, extras } = scan(spec, argv, version, () => formatHelp(spec));
    const given = new Set(actions.map((a) => destOf(a.option)));
    const missing = spec.options.filter((o) => o.required && !given.has(destOf(o)));
    if (missing.length) {
      throw new UsageError(`the following arguments are required: ${missing.map(actionName).join(', ')}`);
    }
    if (extras.length) throw new UsageError(`unrecognized arguments: ${extras.join(' ')}`);

    // hand the accepted options to commander in canonical form
    const canonical = actions.map(({ option, value }) =>
      option.kind === 'flag' ? longName(option) : `${longName(option)}=${String(value)}`,
    );
    const cmd = buildCommand(spec);
    try {
      cmd.parse(canonical, { from: 'user' });
    } catch (e) {
      if (e instanceof CommanderError) throw new UsageError(e.message.replace(/^error: /, ''));
      throw e;
    }
    const parsed = cmd.opts() as Record<string, unknown>;
    const values: Record<string, unknown> = {};
    for (const o of spec.options) {
      if (o.action) continue;
      const key = destOf(o);
      const fromCommander = parsed[camel(strip(o.long))];
      if (given.has(key)) values[key] = fromCommander;
      else values[key] = o.default !== undefined ? o.default : o.kind === 'flag' ? false : undefined;
    }
    const problem = spec.validate?.(values, given);
    if (problem) throw new UsageError(problem);
    return { kind: 'ok', values, given };
  } catch (e) {
    if (e instanceof EarlyExit) return { kind: 'exit', code: 0, stdout: e.stdoutText, stderr: '' };
    if (e instanceof UsageError) return { kind: 'exit', code: 2, stdout: '', stderr: errorText(spec, e.message) };
    throw e;
  }
}

const processIO: CliIO = {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
  exit: (code) => process.exit(code),
};

/**
 * Parse argv (without node and script) like the original's argparse parser. On -h/-V prints
 * to stdout and exits 0; on a usage error prints usage + `<prog>: error: <msg>` to stderr and
 * exits 2 — through `io` (default: the process). If `io.exit` returns, throws {@link CliExit}.
 */
export function parseCommandLine(spec: CommandSpec, argv: readonly string[], io: Partial<CliIO> = {}): Record<string, unknown> {
  const out = { ...processIO, ...io };
  const r = tryParseCommandLine(spec, argv);
  if (r.kind === 'ok') return r.values;
  if (r.stdout) out.stdout(r.stdout);
  if (r.stderr) out.stderr(r.stderr);
  out.exit(r.code);
  throw new CliExit(r.code);
}

/** Force an error in the usage-error format (for checks done after parsing). Exits 2. */
export function usageError(spec: CommandSpec, message: string, io: Partial<CliIO> = {}): never {
  const out = { ...processIO, ...io };
  out.stderr(errorText(spec, message));
  out.exit(2);
  throw new CliExit(2);
}
