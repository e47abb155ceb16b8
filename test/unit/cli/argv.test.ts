import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  parseCommandLine, tryParseCommandLine, resolveLongOption, CliExit, formatHelp,
  type CommandSpec, type OptionSpec,
} from '../../../src/cli/argv.js';
import { backup, restore, map, ok, usage, exit0, B, R, M } from './helpers.js';

const pkgVersion = (JSON.parse(readFileSync(join(process.cwd(), 'package.json'), 'utf8')) as { version: string }).version;

describe('CLI.md §1.1 argument syntax, row by row', () => {
  test('long option with separate value', () => {
    expect(ok(backup, '--domain', 'vm1', '--output', '/b').domain).toBe('vm1');
  });

  test('long option with =', () => {
    const v = ok(backup, '--domain=vm1', '--output=/b', '--compress=5');
    expect(v.domain).toBe('vm1');
    expect(v.output).toBe('/b');
    expect(v.compress).toBe(5);
    expect(ok(backup, '--domain=', '-o', '/b').domain).toBe(''); // empty value is a value
    expect(ok(backup, '-d', 'vm1', '--output=--x').output).toBe('--x'); // a dash value must be attached
  });

  test('long option abbreviated to a unique prefix', () => {
    expect(ok(backup, ...B, '--no-sparse-detect').noSparseDetection).toBe(true);
    expect(ok(backup, '--dom', 'vm1', '-o', '/b').domain).toBe('vm1');
    expect(ok(backup, '--dom=vm1', '--out=/b').output).toBe('/b');
  });

  test('exact name beats prefix: --tls is --tls, not ambiguous with --tls-cert', () => {
    const v = ok(backup, ...B, '--tls');
    expect(v.tls).toBe(true);
    expect(v.tlsCert).toBe('/etc/pki/qemu/');
    expect(ok(backup, ...B, '--tls-', '/certs').tlsCert).toBe('/certs');
  });

  test('ambiguous prefix: usage error naming the candidates', () => {
    expect(usage(backup, ...B, '--no')).toBe(
      'ambiguous option: --no could match --noprogress, --no-sparse-detection, --nocolor',
    );
    expect(usage(backup, ...B, '--no=1')).toMatch(/^ambiguous option: --no could match/);
  });

  test('short option with separate or attached value', () => {
    expect(ok(backup, '-d', 'vm1', '-o', '/b').domain).toBe('vm1');
    expect(ok(backup, '-dvm1', '-o/b').domain).toBe('vm1');
    expect(ok(backup, '-d=vm1', '-o', '/b').domain).toBe('vm1'); // argparse splits -d=vm1 too
    expect(ok(backup, ...B, '-z5').compress).toBe(5);
  });

  test('bundled short flags; a value-taking letter may end the bundle', () => {
    let v = ok(restore, ...R, '-cD');
    expect([v.adjustConfig, v.define]).toEqual([true, true]);
    v = ok(restore, ...R, '-Dc');
    expect([v.adjustConfig, v.define]).toEqual([true, true]);
    v = ok(backup, ...B, '-nv');
    expect([v.noprogress, v.verbose]).toEqual([true, true]);
    v = ok(backup, '-nd', 'vm1', '-o', '/b');
    expect([v.noprogress, v.domain]).toEqual([true, 'vm1']);
    v = ok(backup, '-ndvm1', '-o', '/b');
    expect([v.noprogress, v.domain]).toEqual([true, 'vm1']);
    v = ok(restore, '-nrcDAi/b', '-o', '/r');
    expect([v.noprogress, v.raw, v.adjustConfig, v.define, v.preallocate, v.input]).toEqual([true, true, true, true, true, '/b']);
    v = ok(backup, ...B, '-nz'); // bare optional value at the end of a bundle
    expect([v.noprogress, v.compress]).toEqual([true, 2]);
    expect(usage(backup, ...B, '-nX')).toBe("argument -n/--noprogress: ignored explicit argument 'X'");
  });

  test('flag given a value: usage error', () => {
    expect(usage(backup, ...B, '--tls=1')).toBe("argument --tls: ignored explicit argument '1'");
    expect(usage(backup, ...B, '--raw=yes')).toBe("argument -r/--raw: ignored explicit argument 'yes'");
    expect(usage(backup, ...B, '--tls=')).toBe("argument --tls: ignored explicit argument ''");
    usage(backup, ...B, '--no-sparse=1');
  });

  test('option repeated: last one wins', () => {
    expect(ok(backup, ...B, '-l', 'inc', '-l', 'full').level).toBe('full');
    expect(ok(backup, '-d', 'a', '-d', 'b', '-o', '/b').domain).toBe('b');
    expect(ok(backup, ...B, '-x', 'sda,sdb', '-x', 'vdc').exclude).toBe('vdc');
  });

  test('integer options: decimal with optional sign, negative numbers are values', () => {
    expect(ok(backup, ...B, '-w', '4').worker).toBe(4);
    expect(ok(backup, ...B, '--ssh-port', '2222').sshPort).toBe(2222);
    expect(ok(backup, ...B, '-w', '-1').worker).toBe(-1);
    expect(ok(backup, ...B, '-w', '+3').worker).toBe(3);
    expect(ok(backup, ...B, '-w-2').worker).toBe(-2);
    expect(ok(backup, ...B, '--worker=-7').worker).toBe(-7);
    expect(ok(backup, ...B, '-T', '1048576').threshold).toBe(1048576);
    expect(usage(backup, ...B, '-w', 'x')).toBe("argument -w/--worker: invalid int value: 'x'");
    for (const bad of ['1.5', '0x10', '4k', '', ' 4', '1e3']) usage(backup, ...B, '-w', bad);
    usage(restore, ...R, '-B', 'big');
    usage(backup, ...B, '-P', 'port');
  });

  test('choice options: value outside the list is a usage error', () => {
    expect(usage(backup, ...B, '-l', 'weekly')).toBe(
      "argument -l/--level: invalid choice: 'weekly' (choose from 'copy', 'full', 'inc', 'diff', 'auto')",
    );
    usage(backup, ...B, '-t', 'qcow2');
    usage(restore, ...R, '-a', 'extract');
    for (const l of ['copy', 'full', 'inc', 'diff', 'auto']) expect(ok(backup, ...B, '-l', l).level).toBe(l);
    expect(ok(restore, ...R, '-a', 'verify').action).toBe('verify');
  });

  test('missing required option', () => {
    expect(usage(backup, '-o', '/b')).toBe('the following arguments are required: -d/--domain');
    expect(usage(backup)).toBe('the following arguments are required: -d/--domain, -o/--output');
    expect(usage(restore, '-i', '/b')).toBe('the following arguments are required: -o/--output');
    // a value-taking option at the end without its value
    expect(usage(backup, ...B, '-w')).toBe('argument -w/--worker: expected one argument');
  });

  test('unknown option or stray word', () => {
    expect(usage(backup, ...B, '--bogus')).toBe('unrecognized arguments: --bogus');
    expect(usage(backup, ...B, 'foo')).toBe('unrecognized arguments: foo');
    expect(usage(backup, 'foo', ...B, '-Y')).toBe('unrecognized arguments: foo -Y');
    usage(restore, ...R, 'extra');
    usage(map, ...M, 'extra');
  });

  test('a separate word starting with a dash is never a value (except negative numbers and -)', () => {
    expect(usage(backup, '-o', '--x', '-d', 'vm1')).toBe('argument -o/--output: expected one argument');
    expect(usage(backup, '-d', '-x', '-o', '/b')).toBe('argument -d/--domain: expected one argument');
    expect(ok(backup, '-d', 'vm1', '-o', '-').output).toBe('-');
    expect(ok(backup, '-d', '-1', '-o', '/b').domain).toBe('-1');
    expect(ok(backup, '-d', '-a b', '-o', '/b').domain).toBe('-a b'); // argparse: contains a space
  });

  test('-- ends option processing; anything after it (and -- itself) is unrecognized', () => {
    expect(usage(backup, ...B, '--')).toBe('unrecognized arguments: --');
    expect(usage(backup, ...B, '--', '-n')).toBe('unrecognized arguments: -- -n');
    expect(usage(backup, '-d', '--', '-o', '/b')).toBe('argument -d/--domain: expected one argument');
    // -h after -- is not an option
    usage(backup, ...B, '--', '-h');
  });

  test('-h/--help: help on stdout, exit 0, without the required options, as soon as seen', () => {
    for (const spec of [backup, restore, map]) {
      for (const h of ['-h', '--help', '--hel']) {
        const out = exit0(spec, h);
        expect(out).toMatch(new RegExp(`^Usage: ${spec.prog} `));
        expect(out).toContain('Examples:');
      }
    }
    exit0(backup, '--bogus', '-h'); // unknown words are only reported at the end
    exit0(backup, '-h', '-l', 'weekly'); // acted on before the bad value is reached
    expect(usage(backup, '-l', 'weekly', '-h')).toMatch(/invalid choice/); // argparse order
    exit0(backup, '-nh');
    exit0(backup, '--h');
  });

  test('-V/--version: the version alone on one line, exit 0', () => {
    for (const spec of [backup, restore, map]) {
      expect(exit0(spec, '-V')).toBe(`${pkgVersion}\n`);
      expect(exit0(spec, '--version')).toBe(`${pkgVersion}\n`);
      expect(exit0(spec, '--vers')).toBe(`${pkgVersion}\n`);
    }
    expect(exit0(backup, '-d', 'vm1', '-V', '--bogus')).toBe(`${pkgVersion}\n`);
  });
});

describe('-z/--compress optional integer (CLI.md §1.1)', () => {
  test.each([
    [['-z'], 2],
    [['-z', '5'], 5],
    [['-z5'], 5],
    [['--compress', '5'], 5],
    [['--compress=5'], 5],
    [['--compress'], 2],
    [['--co'], 2],
    [['--co=9'], 9],
    [['-z', '0'], 0],
    [['-z0'], 0],
    [['-z', '-1'], -1],
    [[], undefined],
  ])('%j → %p', (args, level) => {
    expect(ok(backup, ...B, ...(args as string[])).compress).toBe(level);
  });
  test('a following option word is the next option', () => {
    const v = ok(backup, '-z', '-d', 'vm1', '-o', '/b');
    expect([v.compress, v.domain]).toEqual([2, 'vm1']);
    const w = ok(backup, '-o', '/b', '-z', '--domain', 'vm1');
    expect([w.compress, w.domain]).toEqual([2, 'vm1']);
    // attached letters are -z's value, not a bundle (argparse): -zd is level 'd'
    expect(usage(backup, '-zd', 'vm1', '-o', '/b')).toBe("argument -z/--compress: invalid int value: 'd'");
  });
  test('a following word that is not an integer is a usage error', () => {
    expect(usage(backup, ...B, '-z', 'foo')).toBe("argument -z/--compress: invalid int value: 'foo'");
    usage(backup, ...B, '-zfoo');
    usage(backup, ...B, '--compress=');
    usage(backup, ...B, '-z', '1.5');
  });
});

describe('CLI.md §1.2 ambiguous prefixes', () => {
  const cases: [CommandSpec, string, string[]][] = [
    [backup, '--no', ['--noprogress', '--no-sparse-detection', '--nocolor']],
    [backup, '--st', ['--start-domain', '--strict', '--startonly']],
    [backup, '--star', ['--start-domain', '--startonly']],
    [backup, '--ssh', ['--ssh-user', '--ssh-port', '--ssh-private-key']],
    [backup, '--nbd', ['--nbd-port', '--nbd-ip']],
    [backup, '--ver', ['--verbose', '--version']],
    [backup, '--pa', ['--pause', '--password', '--password-file']],
    [restore, '--co', ['--config-file', '--compress']],
    [restore, '--d', ['--disk', '--define']],
    [restore, '--no', ['--noprogress', '--nocolor']],
    [map, '--l', ['--listen-address', '--listen-port', '--logfile']],
    [map, '--list', ['--listen-address', '--listen-port']],
    [map, '--he', ['--hexdump', '--help']],
    [map, '--no', ['--noprogress', '--nocolor', '--no-device']],
  ];
  test.each(cases.map(([s, p, c]) => [s.prog, p, c, s] as const))('%s %s is ambiguous', (_prog, prefix, cands, spec) => {
    const base = spec === backup ? B : spec === restore ? R : M;
    expect(usage(spec, ...base, prefix, 'x')).toBe(`ambiguous option: ${prefix} could match ${cands.join(', ')}`);
  });
});

describe('extensions do not change abbreviations (CLI.md §1.2 resolution order)', () => {
  test('virtnbdmap --d is --device although --disk exists; --b is --blocksize', () => {
    expect(ok(map, ...M, '--d', '/dev/nbd3').device).toBe('/dev/nbd3');
    expect(ok(map, ...M, '--d', '/dev/nbd3').disk).toBeUndefined();
    expect(ok(map, ...M, '--b', '512').blocksize).toBe(512);
    expect(ok(map, ...M, '--t', '4').threads).toBe(4);
    expect(ok(map, ...M, '--f', '/x').file).toBe('/x');
    expect(ok(map, ...M, '--nop').noprogress).toBe(true);
  });
  test('prefixes no original option has resolve to the extension', () => {
    expect(ok(map, ...M, '--di', 'sdb').disk).toBe('sdb');
    expect(ok(map, '--i', '/set').input).toBe('/set');
    expect(ok(map, ...M, '--no-').noDevice).toBe(true);
    expect(ok(map, ...M, '--w', '4').workers).toBe(4);
    expect(ok(map, ...M, '--j').json).toBe(true);
    expect(ok(map, ...M, '--so', '/run/x.sock').socket).toBe('/run/x.sock');
    expect(ok(backup, ...B, '--j').json).toBe(true);
    expect(ok(restore, ...R, '--js').json).toBe(true);
  });
  test('rule order on a synthetic spec', () => {
    const o = (long: string, original: boolean): OptionSpec => ({ long, kind: 'flag', original, help: '' });
    const opts = [o('--boot', false), o('--blocksize', true), o('--mount', false), o('--mounts', false), o('--xa', false), o('--xb', false)];
    const r = (n: string) => {
      const x = resolveLongOption(opts, n);
      return x.kind === 'match' ? x.option.long : x.kind === 'ambiguous' ? x.candidates.map((c) => c.long) : null;
    };
    expect(r('--b')).toBe('--blocksize'); // (2) the only original wins over an extension
    expect(r('--bo')).toBe('--boot'); // (3) the only option of any kind
    expect(r('--mount')).toBe('--mount'); // (1) exact
    expect(r('--mou')).toEqual(['--mount', '--mounts']); // (4) ambiguous
    expect(r('--x')).toEqual(['--xa', '--xb']);
    expect(r('--q')).toBeNull();
  });
});

describe('virtnbdmap checks (ours)', () => {
  test('exactly one of -f and -i is required', () => {
    expect(usage(map)).toBe('one of the arguments -f/--file -i/--input is required');
    expect(usage(map, '-n')).toBe('one of the arguments -f/--file -i/--input is required');
    expect(usage(map, '-f', 'a', '-i', 'b')).toBe('argument -f/--file: not allowed with argument -i/--input');
    expect(ok(map, '-i', '/set', '--disk', 'sda', '--until', 'virtnbdbackup.1').input).toBe('/set');
    exit0(map, '-h');
  });
  test('-b, -t, -p (and --workers) must be positive integers, port at most 65535', () => {
    expect(usage(map, ...M, '-p', '0')).toBe("argument -p/--listen-port: invalid value: '0' (must be between 1 and 65535)");
    usage(map, ...M, '-p', '65536');
    usage(map, ...M, '-p', 'http');
    expect(ok(map, ...M, '-p', '65535').listenPort).toBe(65535);
    expect(usage(map, ...M, '-b', '0')).toBe("argument -b/--blocksize: invalid value: '0' (must be at least 1)");
    usage(map, ...M, '-b', '4k');
    usage(map, ...M, '-t', '-1');
    usage(map, ...M, '--workers', '0');
    expect(ok(map, ...M, '-t', '8').threads).toBe(8);
  });
  test('instant recovery options: --boot needs -i; its options need --boot; --mount not with --boot', () => {
    expect(usage(map, '-f', 'a', '--boot')).toBe('argument --boot: requires -i/--input (a backup directory with its vmconfig)');
    expect(usage(map, '-i', '/set', '--name', 'x')).toBe('argument --name: requires --boot');
    expect(usage(map, '-i', '/set', '--migrate-to', '/x')).toBe('argument --migrate-to: requires --boot');
    expect(usage(map, '-i', '/set', '--boot', '--keep-overlays')).toBe('argument --keep-overlays: requires --overlay-dir (where the overlays are kept)');
    expect(usage(map, '-i', '/set', '--boot', '--mount', '/mnt')).toBe('argument --mount: not allowed with argument --boot');
    const v = ok(map, '-i', '/set', '--boot', '--name', 'vm', '--migrate-to', '/x', '--shutdown-timeout', '0');
    expect([v.boot, v.name, v.migrateTo, v.shutdownTimeout, v.uri]).toEqual([true, 'vm', '/x', 0, 'qemu:///system']);
    expect(ok(map, '-f', 'a', '--mount', '/mnt').mount).toBe('/mnt');
  });
});

describe('virtnbdrestore checks (ours)', () => {
  test('-a and -o selecting different actions is a usage error', () => {
    expect(usage(restore, '-i', '/b', '-a', 'verify', '-o', 'dump')).toMatch(/conflicting actions/);
    usage(restore, '-i', '/b', '-a', 'dump', '-o', 'verify');
    expect(ok(restore, '-i', '/b', '-a', 'dump', '-o', 'dump').action).toBe('dump');
    expect(ok(restore, '-i', '/b', '-o', 'verify').action).toBe('restore'); // resolved by the command
  });
});

describe('parseCommandLine exits through the injected io', () => {
  function capture() {
    const io = { out: '', err: '', code: -1 };
    return {
      io,
      cli: {
        stdout: (s: string) => void (io.out += s),
        stderr: (s: string) => void (io.err += s),
        exit: (c: number) => {
          io.code = c;
          throw new CliExit(c);
        },
      },
    };
  }
  test('usage error → stderr + exit 2', () => {
    const { io, cli } = capture();
    expect(() => parseCommandLine(backup, ['--bogus'], cli)).toThrow(CliExit);
    expect(io.code).toBe(2);
    expect(io.out).toBe('');
    expect(io.err).toMatch(/^usage: virtnbdbackup /);
    expect(io.err).toMatch(/\nvirtnbdbackup: error: the following arguments are required: -d\/--domain, -o\/--output\n$/);
  });
  test('help → stdout + exit 0; an exit that returns still stops parsing', () => {
    const { io, cli } = capture();
    let returned = -1;
    const noThrow = { ...cli, exit: (c: number) => void (returned = c) };
    expect(() => parseCommandLine(map, ['--help'], noThrow)).toThrow(CliExit);
    expect(returned).toBe(0);
    expect(io.out).toContain('virtnbdmap -i /backup/vm1');
    expect(io.err).toBe('');
  });
  test('success returns the values without output', () => {
    const { io, cli } = capture();
    const v = parseCommandLine(restore, ['-i', '/b', '-o', '/r', '-D'], cli);
    expect(v).toMatchObject({ input: '/b', output: '/r', define: true, adjustConfig: false, action: 'restore' });
    expect(io).toEqual({ out: '', err: '', code: -1 });
  });
});

describe('help text', () => {
  test('grouped options with help and defaults, examples epilog', () => {
    const h = formatHelp(backup);
    for (const g of ['General options:', 'Remote backup options:', 'Logging options:', 'Debug options:']) expect(h).toContain(g);
    expect(h).toContain('--no-sparse-detection');
    expect(h).toMatch(/default: copy/);
    expect(h).toMatch(/default:\s+\/var\/tmp\/virtnbdbackup\.4242/);
    expect(h).toContain('virtnbdbackup -d vm1 -l full -z -o - > vm1.zip');
    expect(h.replace(/\s+/g, ' ')).toMatch(/0-2 fast mode, 3-12 LZ4-HC/);
    const r = formatHelp(restore);
    expect(r).toContain('virtnbdrestore -i /backup/vm1 -o /restore -cD --name vm1-restored');
    const m = formatHelp(map);
    expect(m).toContain('--no-device');
    expect(m).toContain('Extensions:');
  });
  test('every option of every spec appears in its help', () => {
    for (const spec of [backup, restore, map]) {
      const h = formatHelp(spec);
      for (const o of spec.options) expect(h).toContain(o.long);
    }
  });
  test('the values hold every option except help/version', () => {
    const r = tryParseCommandLine(backup, B);
    if (r.kind !== 'ok') throw new Error('parse failed');
    expect(Object.keys(r.values).sort()).toEqual(
      backup.options.filter((o) => !o.action).map((o) => o.dest ?? o.long.replace(/^--/, '').replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase())).sort(),
    );
    expect([...r.given].sort()).toEqual(['domain', 'output']);
  });
});
