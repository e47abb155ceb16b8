/**
 * The man pages (src/cli/man-page.ts, `npm run build:man`) are generated from the option specs of
 * every command; they render without a groff warning, through `man -l` too, and list every option
 * of the spec. docs/CLI.md documents every option of every command.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CommandSpec } from '../../../src/cli/argv.js';
import { manSpecs, optionNames, renderManPage } from '../../../src/cli/man-page.js';
import { writeManPages } from '../../../src/cli/gen-man.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const specs = manSpecs();
let dir: string;
const rendered = new Map<string, string>();

/** `man -l` of a page as plain text: wide, no hyphenation, no justification. */
function manText(path: string): { text: string; stderr: string; status: number | null } {
  const r = spawnSync('man', ['--nh', '--nj', '-l', path], {
    encoding: 'utf8',
    env: { ...process.env, LC_ALL: 'C.UTF-8', MANWIDTH: '250', MANPAGER: 'cat', PAGER: 'cat', MAN_KEEP_FORMATTING: '' },
  });
  return { text: r.stdout.replace(/.\x08/g, ''), stderr: r.stderr, status: r.status };
}

/** Option names of `spec` that have no entry line (`-d, --domain NAME`) in the rendered page. */
function missingOptions(text: string, spec: CommandSpec): string[] {
  const lines = text.split('\n').map((l) => l.trim());
  const missing: string[] = [];
  for (const o of spec.options) {
    for (const name of optionNames({ ...spec, options: [o] })) {
      const entry = lines.some((l) => l.split(/,? /).includes(name) && /^-/.test(l));
      if (!entry) missing.push(name);
    }
  }
  return missing;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), `virtnbd-man-${process.pid}-`));
  for (const p of writeManPages(dir, '2026-01-02')) rendered.set(p, readFileSync(p, 'utf8'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('one page per command of src/cli/specs.ts, the four commands included', () => {
  expect(specs.map((s) => s.prog)).toEqual(expect.arrayContaining(['virtnbdbackup', 'virtnbdmap', 'virtnbdprune', 'virtnbdrestore']));
  expect([...rendered.keys()].map((p) => p.slice(dir.length + 1)).sort()).toEqual(specs.map((s) => `${s.prog}.1`).sort());
});

describe.each(specs.map((s) => [s.prog, s] as const))('%s.1', (prog, m) => {
  const path = () => join(dir, `${prog}.1`);

  test('groff renders it without a single warning', () => {
    const r = spawnSync('groff', ['-man', '-Tutf8', '-ww', '-z', path()], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C.UTF-8' } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  test('man -l renders it; every option of the spec has its entry; exit codes and examples are there', () => {
    const { text, stderr, status } = manText(path());
    expect(stderr).toBe('');
    expect(status).toBe(0);
    expect(text).toMatch(new RegExp(`^${prog.toUpperCase()}\\(1\\)`));
    expect(text).toContain('SYNOPSIS');
    expect(missingOptions(text, m.variants[0])).toEqual([]);
    expect(text).toMatch(/EXIT STATUS\n\s+0\s+\S[\s\S]*\n\s+1\s+\S[\s\S]*\n\s+2\s+\S/);
    if (m.variants[0].epilog) expect(text).toContain('EXAMPLES');
  });

  test('generation is deterministic (same date → same bytes) and marks itself generated', () => {
    const again = renderManPage(m, { date: '2026-01-02', version: JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version });
    expect(again).toBe(rendered.get(path()));
    expect(again.split('\n')[0]).toMatch(/Generated .* Do not edit/);
    expect(again).not.toContain(String(process.pid)); // defaults with a pid show <pid>
  });
});

test('the entry check notices an option the page lacks', () => {
  const m = specs.find((s) => s.prog === 'virtnbdbackup')!;
  const { text } = manText(join(dir, 'virtnbdbackup.1'));
  const spec = m.variants[0];
  const extended: CommandSpec = { ...spec, options: [...spec.options, { long: '--not-there', kind: 'flag', help: 'x', original: false }] };
  expect(missingOptions(text, extended)).toEqual(['--not-there']);
});

test('docs/CLI.md documents every long option of every command', () => {
  const cli = readFileSync(join(ROOT, 'docs', 'CLI.md'), 'utf8');
  const undocumented: string[] = [];
  for (const m of specs)
    for (const o of m.variants[0].options) {
      const long = o.long.startsWith('--') ? o.long : `--${o.long}`;
      if (!cli.includes(`\`${long}\``) && !cli.includes(`\`${long} `) && !cli.includes(`\`${long}=`)) undocumented.push(`${m.prog} ${long}`);
    }
  expect(undocumented).toEqual([]);
});

test('groff and man are installed (scripts/setup.sh)', () => {
  expect(execFileSync('groff', ['--version'], { encoding: 'utf8' })).toMatch(/groff/i);
});
