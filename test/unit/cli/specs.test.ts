import { tryParseCommandLine, type CommandSpec, type OptionSpec } from '../../../src/cli/argv.js';
import { virtnbdbackupSpec, virtnbdrestoreSpec, virtnbdmapSpec, currentSpecEnv } from '../../../src/cli/specs.js';
import { backup, restore, map, ok, B, R, M } from './helpers.js';

const byLong = (spec: CommandSpec, long: string): OptionSpec => {
  const o = spec.options.find((x) => x.long === long);
  if (!o) throw new Error(`${spec.prog} has no ${long}`);
  return o;
};

describe('short letters per command (CLI.md §2.1 letter table)', () => {
  const table: [string, string | null, string | null, string | null][] = [
    ['-L', '--syslog', '--logfile', '--logfile'],
    ['-s', '--startonly', '--sequence', null],
    ['-C', '--checkpointdir', '--config-file', null],
    ['-r', '--raw', '--raw', '--readonly'],
    ['-i', '--include', '--input', '--input'], // map -i is our extension (the original has none)
    ['-d', '--domain', '--disk', '--device'],
    ['-o', '--output', '--output', null],
    ['-f', '--socketfile', '--socketfile', '--file'],
    ['-n', '--noprogress', '--noprogress', '--noprogress'],
    ['-p', '--printonly', null, '--listen-port'],
    ['-t', '--type', null, '--threads'],
    ['-l', '--level', null, '--listen-address'],
    ['-e', '--strict', null, '--export-name'],
    ['-b', null, null, '--blocksize'],
    ['-B', null, '--buffsize', null],
  ];
  test.each(table)('%s', (letter, b, r, m) => {
    const find = (s: CommandSpec) => s.options.find((o) => o.short === letter)?.long ?? null;
    expect([find(backup), find(restore), find(map)]).toEqual([b, r, m]);
  });
  test('extensions are long-only except virtnbdmap -i; short letters are unique', () => {
    for (const spec of [backup, restore, map]) {
      const shorts = spec.options.filter((o) => o.short).map((o) => o.short);
      expect(new Set(shorts).size).toBe(shorts.length);
      const longs = spec.options.map((o) => o.long);
      expect(new Set(longs).size).toBe(longs.length);
      for (const o of spec.options.filter((x) => !x.original)) {
        if (spec === map && o.long === '--input') expect(o.short).toBe('-i');
        else expect(o.short).toBeUndefined();
      }
    }
  });
  test('--json on every command (extension)', () => {
    for (const spec of [backup, restore, map]) expect(byLong(spec, '--json')).toMatchObject({ kind: 'flag', original: false });
  });
  test('virtnbdmap extensions', () => {
    const ext = map.options.filter((o) => !o.original).map((o) => o.long).sort();
    expect(ext).toEqual(
      [
        '--disk', '--input', '--json', '--no-device', '--socket', '--until', '--workers',
        // instant recovery (issue 5)
        '--boot', '--name', '--uri', '--migrate-to', '--keep-overlays', '--overlay-dir', '--shutdown-timeout', '--mount',
        // boot verification (issue 12)
        '--verify', '--all-points', '--timeout', '--expect-console', '--expect-agent', '--screenshot', '--report-dir',
      ].sort(),
    );
  });
});

describe('defaults (CLI.md)', () => {
  test('virtnbdbackup', () => {
    const v = ok(backup, ...B);
    expect(v).toMatchObject({
      level: 'copy', type: 'stream', raw: false, scratchdir: '/var/tmp', socketfile: '/var/tmp/virtnbdbackup.4242',
      compress: undefined, worker: undefined, checkpointdir: undefined, include: undefined, exclude: undefined,
      uri: 'qemu:///session', sshUser: 'tester', sshPort: 22, nbdPort: 10809, nbdIp: '', tls: false,
      tlsCert: '/etc/pki/qemu/', user: undefined, password: undefined, sshPrivateKey: undefined,
      threshold: undefined, strict: false, noSparseDetection: false, quiet: false, syslog: false, json: false,
    });
    const root = virtnbdbackupSpec({ euid: 0, pid: 1, home: '/root', user: 'root' });
    expect(ok(root, ...B).uri).toBe('qemu:///system');
    expect(ok(root, ...B).socketfile).toBe('/var/tmp/virtnbdbackup.1');
  });
  test('virtnbdrestore', () => {
    expect(ok(restore, ...R)).toMatchObject({
      action: 'restore', configFile: 'vmconfig.xml', buffsize: 8192, name: undefined, logfile: '/home/tester/virtnbdrestore.log',
      socketfile: '/var/tmp/virtnbdbackup.4242', compress: false, preallocate: false, uri: 'qemu:///session',
    });
    const noHome = virtnbdrestoreSpec({ euid: 0, pid: 7, home: undefined, user: undefined });
    expect(ok(noHome, ...R)).toMatchObject({ logfile: '/tmp/virtnbdrestore.log', uri: 'qemu:///system', sshUser: undefined });
  });
  test('virtnbdmap', () => {
    expect(ok(map, ...M)).toMatchObject({
      file: '/b/sda.full.data', blocksize: 4096, device: '/dev/nbd0', exportName: 'sda', threads: 1,
      listenAddress: '127.0.0.1', listenPort: 10809, logfile: '/home/tester/virtnbdmap.log', readonly: false,
      hexdump: false, input: undefined, disk: undefined, until: undefined, socket: undefined, json: false,
      workers: 2, noDevice: false,
    });
    expect(ok(virtnbdmapSpec({ euid: 0, pid: 1, home: undefined, user: 'x' }), ...M).logfile).toBe('/tmp/virtnbdmap.log');
  });
  test('currentSpecEnv reflects the process', () => {
    const e = currentSpecEnv();
    expect(e.pid).toBe(process.pid);
    expect(e.euid).toBe(process.geteuid?.() ?? -1);
    const s = virtnbdbackupSpec();
    const r = tryParseCommandLine(s, B);
    expect(r.kind === 'ok' && r.values.socketfile).toBe(`/var/tmp/virtnbdbackup.${process.pid}`);
    expect(r.kind === 'ok' && r.values.uri).toBe(process.geteuid?.() === 0 ? 'qemu:///system' : 'qemu:///session');
  });
});

test('virtnbdbackup -z help explains the levels', () => {
  const h = byLong(backup, '--compress').help;
  expect(h).toMatch(/0-2 fast mode, 3-12 LZ4-HC/);
  expect(byLong(backup, '--compress')).toMatchObject({ kind: 'optionalInt', const: 2 });
});

test('restore --compress is a flag, backup --compress an optional level', () => {
  expect(ok(restore, ...R, '--compress').compress).toBe(true);
  expect(tryParseCommandLine(restore, [...R, '--compress=3']).kind).toBe('exit');
});
