/**
 * Man pages rendered from the same option specs that parse the command lines and print `--help`
 * (src/cli/specs.ts), plus a short hand-written block per command (man-text.ts): one source, so a
 * page cannot drift from the options the command really takes (docs/CLI.md §5).
 *
 * Hand-written because the job is small (roff for NAME/SYNOPSIS/OPTIONS/… from a few dozen option
 * records); the npm man-page generators render markdown or commander programs, neither of which
 * knows our groups, argparse-style synopsis, per-environment defaults or extension markers.
 */
import { longName, metavarOf, shortName, type CommandSpec, type OptionSpec } from './argv.js';
import * as specs from './specs.js';
import type { SpecEnv } from './specs.js';
import { manText, type ManText } from './man-text.js';

/** Placeholder pid: defaults that contain the process id show `<pid>` instead. */
const PID = 987654321;
const HOME = '$HOME';

/** The environments a default can depend on: root and an ordinary user. */
const ENVS: { label: string; env: SpecEnv }[] = [
  { label: 'root', env: { euid: 0, pid: PID, home: HOME, user: undefined } },
  { label: 'other users', env: { euid: 1000, pid: PID, home: HOME, user: undefined } },
];

export interface ManSpec {
  /** `virtnbdbackup`, … */
  prog: string;
  /** The spec as rendered for each environment of ENVS (same options, maybe other defaults). */
  variants: CommandSpec[];
}

/** Every command of specs.ts: each exported `virtnbd…Spec(env)` function (a new command is picked up). */
export function manSpecs(): ManSpec[] {
  const out: ManSpec[] = [];
  for (const [name, fn] of Object.entries(specs)) {
    if (!/^virtnbd[a-z]+Spec$/.test(name) || typeof fn !== 'function') continue;
    const make = fn as (env: SpecEnv) => CommandSpec;
    const variants = ENVS.map((e) => make(e.env));
    out.push({ prog: variants[0].prog, variants });
  }
  return out.sort((a, b) => (a.prog < b.prog ? -1 : a.prog > b.prog ? 1 : 0));
}

// ------------------------------------------------------------------------------------------
// roff

/** Escape text for roff: backslashes, hyphens (as in option names), non-ASCII as `\\[uXXXX]`, control characters at line start. */
export function roffText(s: string): string {
  const body = s
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .replace(/[^\n\x20-\x7e]/gu, (c) => `\\[u${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}]`);
  return body
    .split('\n')
    .map((l) => (/^[.']/.test(l) ? `\\&${l}` : l))
    .join('\n');
}

const bold = (s: string) => `\\fB${roffText(s)}\\fR`;
const ital = (s: string) => `\\fI${roffText(s)}\\fR`;
const quoted = (s: string) => `"${s.replace(/"/g, '\\(dq')}"`;

function takesValue(o: OptionSpec): boolean {
  return o.kind !== 'flag';
}

/** `-d, --domain NAME` in roff. */
function optionHead(o: OptionSpec): string {
  const names = [shortName(o), longName(o)].filter((n): n is string => n !== undefined).map(bold).join(', ');
  if (o.kind === 'optionalInt') return `${names} [${ital(metavarOf(o))}]`;
  if (takesValue(o)) return `${names} ${ital(metavarOf(o))}`;
  return names;
}

function defaultOf(o: OptionSpec): string | undefined {
  if (o.defaultText !== undefined) return o.defaultText;
  if (o.kind === 'flag' || o.default === undefined || o.default === null) return undefined;
  if (o.default === '') return "''";
  return String(o.default);
}

/** The default shown for an option; where it depends on the user, every variant is named. */
function defaultText(variants: CommandSpec[], o: OptionSpec): string | undefined {
  const texts = variants.map((v) => {
    const same = v.options.find((x) => x.long === o.long);
    const d = same ? defaultOf(same) : undefined;
    return d?.replace(String(PID), '<pid>');
  });
  if (texts.every((t) => t === texts[0])) return texts[0];
  return texts.map((t, i) => `${t ?? 'none'} (${ENVS[i].label})`).join(', ');
}

function optionNotes(variants: CommandSpec[], o: OptionSpec): string[] {
  const notes: string[] = [];
  if (o.required) notes.push('Required.');
  if (o.kind === 'choice' && o.choices) notes.push(`One of: ${o.choices.join(', ')}.`);
  const d = defaultText(variants, o);
  if (d !== undefined) notes.push(`Default: ${d}.`);
  // only a command of the original has extensions; -h/-V are shared by every command
  if (!o.original && variants[0].options.some((x) => x.original && x.action === undefined)) notes.push('(virtnbd extension)');
  return notes;
}

/** The argparse-style synopsis (as formatUsage prints it for --help) in roff: bold names, italic values. */
function synopsis(spec: CommandSpec): string {
  const parts: string[] = [];
  for (const o of spec.options) {
    const flag = shortName(o) ?? longName(o);
    let p = bold(flag);
    if (o.kind === 'optionalInt') p += ` [${ital(metavarOf(o))}]`;
    else if (takesValue(o)) p += ` ${ital(metavarOf(o))}`;
    parts.push(o.required ? p : `[${p}]`);
  }
  return `.B ${spec.prog}\n${parts.join('\n')}`;
}

function paragraphs(text: string): string {
  return text
    .trim()
    .split(/\n\s*\n/)
    .map((p) => roffText(p.replace(/\s*\n\s*/g, ' ')))
    .join('\n.PP\n');
}

/** The examples of the spec's epilog (`  # what` / `  command` pairs) as roff. */
function examples(epilog: string | undefined): string | undefined {
  if (!epilog) return undefined;
  const lines = epilog.split('\n').filter((l) => !/^Examples:\s*$/.test(l));
  if (lines.every((l) => l.trim() === '')) return undefined;
  const out: string[] = [];
  for (const raw of lines) {
    const l = raw.trim();
    if (l === '') continue;
    if (l.startsWith('#')) out.push('.PP', roffText(l.replace(/^#\s*/, '').replace(/^./, (c) => c.toUpperCase())) + ':');
    else out.push('.IP', '.nf', `\\f(CR${roffText(l)}\\fR`, '.fi');
  }
  return out.join('\n');
}

export interface RenderOptions {
  /** `YYYY-MM-DD` for the page footer. */
  date: string;
  /** virtnbd's version for the page footer. */
  version: string;
}

/** One man page (section 1) in roff. */
export function renderManPage(m: ManSpec, opts: RenderOptions, text: ManText | undefined = manText[m.prog]): string {
  const spec = m.variants[0];
  const out: string[] = [];
  out.push(`.\\" Generated by src/cli/gen-man.ts from src/cli/specs.ts and src/cli/man-text.ts. Do not edit.`);
  out.push(`.TH ${m.prog.toUpperCase()} 1 ${quoted(opts.date)} ${quoted(`virtnbd ${opts.version}`)} "User Commands"`);
  out.push('.SH NAME', `${m.prog} \\- ${roffText(text?.summary ?? spec.description.replace(/\.$/, ''))}`);
  out.push('.SH SYNOPSIS', synopsis(spec));
  out.push('.SH DESCRIPTION', paragraphs(text?.description ?? spec.description));

  out.push('.SH OPTIONS');
  const groups: string[] = [];
  for (const o of spec.options) if (!groups.includes(o.group ?? 'Options')) groups.push(o.group ?? 'Options');
  for (const g of groups) {
    out.push(`.SS ${quoted(g)}`);
    for (const o of spec.options.filter((x) => (x.group ?? 'Options') === g)) {
      out.push('.TP', optionHead(o));
      const notes = optionNotes(m.variants, o);
      out.push(roffText([o.help.replace(/\.?$/, '.'), ...notes].join(' ')));
    }
  }

  out.push('.SH EXIT STATUS');
  const exits = text?.exitStatus ?? [
    ['0', 'Success; also after --help and --version.'],
    ['1', 'An error.'],
    ['2', 'A usage error.'],
  ];
  for (const [code, meaning] of exits) out.push('.TP', bold(code), roffText(meaning));

  const ex = examples(spec.epilog);
  if (ex) out.push('.SH EXAMPLES', ex);
  if (text?.files?.length) {
    out.push('.SH FILES');
    for (const [file, meaning] of text.files) out.push('.TP', ital(file), roffText(meaning));
  }
  if (text?.notes) out.push('.SH NOTES', paragraphs(text.notes));
  const others = manSpecs()
    .map((s) => s.prog)
    .filter((p) => p !== m.prog);
  const seeAlso = [...others.map((p) => `${bold(p)}(1)`), ...(text?.seeAlso ?? []).map((s) => roffText(s))];
  out.push('.SH SEE ALSO', `${seeAlso.join(',\n')}.`, '.PP', roffText(DOCS_NOTE));
  return `${out.join('\n')}\n`;
}

const DOCS_NOTE =
  'The specifications are in the docs/ folder of the virtnbd source tree: FORMAT.md (the backup files byte by byte), ' +
  'CHAIN.md (how a chain becomes a disk), CLI.md (command lines and exit codes), BEHAVIOUR.md (behaviour and safety rules), ' +
  'PROTOCOL.md and ARCHITECTURE.md.';

/** Every option name (`-d`, `--domain`) a page must mention. */
export function optionNames(spec: CommandSpec): string[] {
  return spec.options.flatMap((o) => [shortName(o), longName(o)].filter((n): n is string => n !== undefined));
}
