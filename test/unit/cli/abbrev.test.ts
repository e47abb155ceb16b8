/**
 * CLI.md §1.2: the shortest accepted abbreviation of every long option, computed from the
 * *original* options of each command only, must equal the table in CLI.md — and, with our
 * extensions added, that abbreviation must still select the same option.
 */
import { resolveLongOption, longName, type CommandSpec, type OptionSpec } from '../../../src/cli/argv.js';
import { backup, restore, map } from './helpers.js';

/** CLI.md §1.2 table: [shortest accepted prefix, option]. */
const TABLE: Record<string, [string, string][]> = {
  virtnbdbackup: [
    ['--d', 'domain'], ['--l', 'level'], ['--ty', 'type'], ['--r', 'raw'], ['--o', 'output'],
    ['--ch', 'checkpointdir'], ['--sc', 'scratchdir'], ['--start-', 'start-domain'], ['--pau', 'pause'],
    ['--i', 'include'], ['--e', 'exclude'], ['--so', 'socketfile'], ['--nop', 'noprogress'], ['--co', 'compress'],
    ['--w', 'worker'], ['--f', 'freeze-mountpoint'], ['--str', 'strict'], ['--no-', 'no-sparse-detection'],
    ['--th', 'threshold'], ['--ur', 'uri'], ['--us', 'user'], ['--ssh-u', 'ssh-user'], ['--ssh-po', 'ssh-port'],
    ['--ssh-pr', 'ssh-private-key'], ['--pas', 'password'], ['--nbd-p', 'nbd-port'], ['--nbd-i', 'nbd-ip'],
    ['--tls', 'tls'], ['--tls-', 'tls-cert'], ['--sy', 'syslog'], ['--qu', 'quiet'], ['--noc', 'nocolor'],
    ['--qe', 'qemu'], ['--starto', 'startonly'], ['--k', 'killonly'], ['--pr', 'printonly'], ['--verb', 'verbose'],
    ['--vers', 'version'], ['--h', 'help'],
  ],
  virtnbdrestore: [
    ['--ac', 'action'], ['--i', 'input'], ['--o', 'output'], ['--un', 'until'], ['--se', 'sequence'],
    ['--di', 'disk'], ['--nop', 'noprogress'], ['--so', 'socketfile'], ['--r', 'raw'], ['--ad', 'adjust-config'],
    ['--de', 'define'], ['--con', 'config-file'], ['--na', 'name'], ['--b', 'buffsize'], ['--pr', 'preallocate'],
    ['--com', 'compress'], ['--ur', 'uri'], ['--us', 'user'], ['--ssh-u', 'ssh-user'], ['--ssh-po', 'ssh-port'],
    ['--ssh-pr', 'ssh-private-key'], ['--pa', 'password'], ['--nbd-p', 'nbd-port'], ['--nbd-i', 'nbd-ip'],
    ['--tls', 'tls'], ['--tls-', 'tls-cert'], ['--l', 'logfile'], ['--noc', 'nocolor'], ['--verb', 'verbose'],
    ['--vers', 'version'], ['--h', 'help'],
  ],
  virtnbdmap: [
    ['--f', 'file'], ['--b', 'blocksize'], ['--d', 'device'], ['--e', 'export-name'], ['--t', 'threads'],
    ['--listen-a', 'listen-address'], ['--listen-p', 'listen-port'], ['--nop', 'noprogress'], ['--lo', 'logfile'],
    ['--noc', 'nocolor'], ['--r', 'readonly'], ['--hex', 'hexdump'], ['--verb', 'verbose'], ['--vers', 'version'],
    ['--hel', 'help'],
  ],
};

/** Shortest prefix of `o`'s long name that `options` resolve to `o`; the full name if none is shorter. */
function shortest(options: readonly OptionSpec[], o: OptionSpec): string {
  const full = longName(o);
  for (let n = 3; n <= full.length; n++) {
    const p = full.slice(0, n);
    const r = resolveLongOption(options, p);
    if (r.kind === 'match' && r.option === o) return p;
  }
  throw new Error(`${full} does not resolve to itself`);
}

describe.each([backup, restore, map].map((s) => [s.prog, s] as [string, CommandSpec]))('%s', (prog, spec) => {
  const originals = spec.options.filter((o) => o.original);

  test('the original options are exactly those of the CLI.md table', () => {
    expect(originals.map((o) => longName(o).slice(2)).sort()).toEqual(TABLE[prog].map(([, n]) => n).sort());
  });

  test('shortest unique abbreviation of every original option equals CLI.md §1.2', () => {
    const computed = originals.map((o) => [shortest(originals, o), longName(o).slice(2)]);
    const expected = TABLE[prog].map(([p, n]) => [p, n]);
    expect(computed.sort()).toEqual(expected.sort());
  });

  test('every prefix shorter than it is not accepted for that option (original set)', () => {
    for (const [p, name] of TABLE[prog]) {
      for (let n = 3; n < p.length; n++) {
        const r = resolveLongOption(originals, p.slice(0, n));
        expect(r.kind === 'match' && longName(r.option) === `--${name}`).toBe(false);
      }
    }
  });

  test('with the extensions, every accepted abbreviation (and longer prefix) still means the same option', () => {
    for (const [p, name] of TABLE[prog]) {
      const full = `--${name}`;
      for (let n = p.length; n <= full.length; n++) {
        const r = resolveLongOption(spec.options, full.slice(0, n));
        expect(r.kind === 'match' ? longName(r.option) : `${r.kind} ${full.slice(0, n)}`).toBe(full);
      }
    }
  });
});
