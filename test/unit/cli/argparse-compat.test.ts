/**
 * Differential test: our parser against Python's argparse (the original's parser, python3 is on
 * every machine) configured with the same original options. Compares the outcome (values,
 * usage error, help/version exit) — not the message texts, which vary between Python versions.
 * Cases whose argparse behaviour changed between Python versions (`--` handling, empty explicit
 * values of flags) are covered in argv.test.ts instead.
 */
import { execFileSync } from 'node:child_process';
import { tryParseCommandLine, destOf, type CommandSpec } from '../../../src/cli/argv.js';
import { backup, restore, map } from './helpers.js';

const PY = `
import argparse, contextlib, io, json, sys
spec, cases = json.load(sys.stdin)
def build():
    p = argparse.ArgumentParser(prog=spec['prog'], add_help=False)
    for o in spec['options']:
        flags = ([o['short']] if o.get('short') else []) + [o['long']]
        k = o['kind']
        if o.get('action') == 'help': p.add_argument(*flags, action='help'); continue
        if o.get('action') == 'version': p.add_argument(*flags, action='version', version='V'); continue
        kw = {'dest': o['dest']}
        if k == 'flag': kw['action'] = 'store_true'
        elif k == 'int': kw['type'] = int
        elif k == 'choice': kw['choices'] = o['choices']
        elif k == 'optionalInt': kw.update(nargs='?', const=o['const'], type=int)
        if o.get('required'): kw['required'] = True
        p.add_argument(*flags, **kw)
    return p
out = []
for argv in cases:
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            ns = build().parse_args(argv)
        out.append({'code': None, 'values': {k: v for k, v in vars(ns).items() if v is not None and v is not False}})
    except SystemExit as e:
        out.append({'code': e.code})
print(json.dumps(out))
`;

/** The spec as the original had it: original options only, no range checks, no validate hook. */
function originalOnly(spec: CommandSpec): CommandSpec {
  const options = spec.options
    .filter((o) => o.original)
    .map((o) => ({ ...o, dest: destOf(o), min: undefined, max: undefined, required: o.required || (spec.prog === 'virtnbdmap' && o.long === '--file') }));
  return { ...spec, options, validate: undefined };
}

type Outcome = { code: number | null; values?: Record<string, unknown> };

function compare(spec: CommandSpec, cases: string[][]) {
  const orig = originalOnly(spec);
  const py = JSON.parse(
    execFileSync('python3', ['-c', PY], { input: JSON.stringify([{ prog: orig.prog, options: orig.options }, cases]) }).toString(),
  ) as Outcome[];
  const diffs: unknown[] = [];
  cases.forEach((argv, i) => {
    const r = tryParseCommandLine(orig, argv);
    const ours: Outcome =
      r.kind === 'ok'
        ? { code: null, values: Object.fromEntries(Object.entries(r.values).filter(([k, v]) => r.given.has(k) && v !== false && v !== undefined)) }
        : { code: r.code };
    const sort = (o: Outcome) => ({ code: o.code, values: o.values && Object.fromEntries(Object.entries(o.values).sort()) });
    if (JSON.stringify(sort(ours)) !== JSON.stringify(sort(py[i]))) diffs.push({ argv, ours, argparse: py[i] });
  });
  expect(diffs).toEqual([]);
}

const B = ['-d', 'vm1', '-o', 'x'];
test('virtnbdbackup', () => {
  compare(backup, [
    B, ['-dvm1', '-ox'], ['-d=vm1', '-o=x'], ['--domain=vm1', '--output', 'x'], ['--dom', 'vm1', '--out', 'x'],
    [...B, '--no-sparse-detect'], [...B, '--no'], [...B, '--st'], [...B, '--star'], [...B, '--ssh'], [...B, '--nbd'],
    [...B, '--ver'], [...B, '--pa'], ['-nd', 'vm1', '-o', 'x'], ['-ndvm1', '-o', 'x'], ['-nv', ...B], [...B, '--tls=1'],
    [...B, '--raw=yes'], [...B, '-l', 'inc', '-l', 'full'], [...B, '-w', '4'], [...B, '-w', '-1'], [...B, '-w', '+3'],
    [...B, '-w', 'x'], [...B, '-w', '1.5'], [...B, '-l', 'bogus'], ['-o', 'x'], [], [...B, '--bogus'], [...B, 'foo'],
    ['-h'], ['--bogus', '-h'], ['-V'], [...B, '-z'], [...B, '-z', '5'], [...B, '-z5'], [...B, '--compress', '5'],
    [...B, '--compress=5'], ['-z', '-d', 'vm1', '-o', 'x'], [...B, '-z', 'foo'], ['-d', 'vm1', '-z', '-1', '-o', 'x'],
    ['-o', '--x', '-d', 'vm1'], ['-o=--x', '-d', 'vm1'], ['--output=--x', '-d', 'vm1'], ['-o', '-', '-d', 'vm1'],
    ['-d', '-x', '-o', 'x'], ['-d', '-1', '-o', 'x'], ['-d', 'a b', '-o', 'x'], ['-d', '-a b', '-o', 'x'],
    ['-zn', ...B], ['-nX', ...B], [...B, '--tls'], [...B, '--tls-', 'c'], [...B, '--tl'], ['-d', '', '-o', 'x'],
    ['--domain=', '-o', 'x'], ['-l', 'bad', '-h'], ['-h', '-l', 'bad'], [...B, '-w'], [...B, '-S', '--pau'],
    ['-Sn', ...B], [...B, '-e', '-L', '-q', '-s', '-k', '-p', '-v'], [...B, '-T', '-5'], [...B, '-d'], ['-domain', '-o', 'x'],
    ['-zd', 'vm1', '-o', 'x'], ['-nzd', 'vm1', '-o', 'x'], [...B, '--co', '7'], [...B, '--co=7'], [...B, '--qu', '--noc', '--sy'],
    [...B, '-C', '/c', '--sc', '/s', '-i', 'sda', '-x', 'sdb,sdc', '-f', '/sock', '-F', '/,/boot', '-T', '100'],
    [...B, '-U', 'qemu+ssh://h/system', '--user', 'u', '--pas', 'p', '--ssh-u', 's', '--ssh-po', '2222', '--ssh-pr', 'k', '-P', '1', '-I', '::1'],
    [...B, '-P', 'x'], [...B, '--ssh-port=-2'], [...B, '-t', 'raw', '-r'], [...B, '-t', 'qcow'], ['-nvh'], ['-vV'],
  ]);
});

const R = ['-i', 'a', '-o', 'b'];
test('virtnbdrestore', () => {
  compare(restore, [
    R, [...R, '--co'], [...R, '--d', 'x'], [...R, '--no'], [...R, '-cD'], [...R, '-Dc'], [...R, '--compress'], [...R, '--com'],
    [...R, '--compress=1'], [...R, '-a', 'bogus'], [...R, '-B', '-5'], [...R, '--ac', 'dump'], [...R, '--ad'], ['-ia', '-ob', '-nrcDA'],
    [...R, '--se', 'x,y'], [...R, '-u', 'cp', '-d', 'sda', '-C', 'c.xml', '-N', 'n', '-B', '65536', '-f', '/s', '-L', '/l'],
    ['-i', 'a'], [...R, '-s'], [...R, '--un', 'x', '--di', 'y'], ['-h'], ['-i', 'a', '-V'], [...R, '--tls', '--tls-', 'c'],
  ]);
});

const M = ['-f', 'a'];
test('virtnbdmap', () => {
  compare(map, [
    M, [...M, '--l', 'x'], [...M, '--list', 'x'], [...M, '--he'], [...M, '--no'], [...M, '--d', '/dev/nbd1'], [...M, '--b', '512'],
    [...M, '-b', 'x'], [...M, '--lo', 'l'], [...M, '--listen-a', '0.0.0.0'], [...M, '--hel'], [], ['-n'], ['-h'], ['-V'],
    [...M, '-b', '512', '-d', '/dev/nbd2', '-e', 'vda', '-t', '4', '-l', '::', '-p', '10810', '-rHvn', '--noc', '-L', '/l'],
    ['-fa,b', '-rH'], [...M, '-rX'],
  ]);
});
