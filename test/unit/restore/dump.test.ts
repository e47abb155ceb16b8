/**
 * virtnbdrestore dump (src/restore/dump.ts): metadata of every data file, per disk in chain order,
 * printed as Python's json.dumps(indent=4). Runs on copies of the original's fixture sets.
 */
import { randomBytes } from 'node:crypto';
import { copyFileSync, cpSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pyJsonDumps } from '../../../src/saveset/pyjson.js';
import { buildMetadata } from '../../../src/saveset/metadata.js';
import { SavesetWriter } from '../../../src/saveset/writer.js';
import { RestoreInputError } from '../../../src/restore/dump-files.js';
import { dumpSet, formatDump } from '../../../src/restore/dump.js';
import { recordingLogger } from '../backup/recording-logger.js';

const SETS = fileURLToPath(new URL('../../fixtures/upstream-sets/', import.meta.url));
const UNIX = { d1: '1795884514', d2: '1795884529' } as const;

const temps: string[] = [];
afterAll(() => {
  for (const t of temps) rmSync(t, { recursive: true, force: true });
});
function copySet(set: 'd1' | 'd2'): string {
  const d = mkdtempSync(join(tmpdir(), 'virtnbd-dump-'));
  temps.push(d);
  cpSync(join(SETS, set, 'backup'), d, { recursive: true });
  return d;
}

/** The metadata JSON text of a stream, read by hand (meta header: 40 bytes, length in hex). */
function metaText(path: string): string {
  const b = readFileSync(path);
  expect(b.toString('latin1', 0, 5)).toBe('meta ');
  const n = parseInt(b.toString('latin1', 22, 38), 16);
  return b.toString('utf8', 40, 40 + n);
}

/** Chain order of one disk of the fixture sets: full, inc.1, inc.2, the diff (parent inc.2), inc.3. */
const chainOf = (dev: string, unix: string): string[] => [
  `${dev}.full.data`,
  `${dev}.inc.virtnbdbackup.1.data`,
  `${dev}.inc.virtnbdbackup.2.data`,
  `${dev}.diff.${unix}.data`,
  `${dev}.inc.virtnbdbackup.3.data`,
];

describe.each([['d1'], ['d2']] as const)('%s', (set) => {
  const dir = join(SETS, set, 'backup');
  const expected = [...chainOf('sdb', UNIX[set]), ...chainOf('vda', UNIX[set])];

  test('entries: the metadata of every file, per disk in chain order (not name order)', async () => {
    const log = recordingLogger();
    const { entries, errors } = await dumpSet(dir, {}, log);
    expect(errors).toBe(0);
    expect(entries).toEqual(expected.map((n) => JSON.parse(metaText(join(dir, n)))));
    expect(log.at('INFO')[0]).toBe('Dumping saveset meta information');
    expect(log.at('INFO').filter((m) => m.startsWith('/'))).toEqual(expected.map((n) => join(dir, n)));
    expect(log.at('INFO').filter((m) => m.startsWith('Compressed stream found'))).toHaveLength(set === 'd2' ? 10 : 0);
    expect(log.counts).toEqual({ warnings: 0, errors: 0 });
  });

  test('output is json.dumps(indent=4) of the list: each file\'s own metadata text, indented one level more', async () => {
    const { entries } = await dumpSet(dir, {}, recordingLogger());
    const out = formatDump(entries);
    expect(JSON.parse(out)).toEqual(entries);
    expect(out).toBe(pyJsonDumps(entries, 4));
    // the files' metadata is itself json.dumps(indent=4) output, so the list is built from it textually
    const byHand = `[\n${expected.map((n) => '    ' + metaText(join(dir, n)).split('\n').join('\n    ')).join(',\n')}\n]`;
    expect(out).toBe(byHand);
  });
});

test('--disk is an exact match: vda does not match vdaa', async () => {
  const dir = copySet('d1');
  copyFileSync(join(dir, 'vda.full.data'), join(dir, 'vdaa.full.data'));
  const vda = await dumpSet(dir, { disk: 'vda' }, recordingLogger());
  expect(vda.entries).toEqual(chainOf('vda', UNIX.d1).map((n) => JSON.parse(metaText(join(dir, n)))));
  const log = recordingLogger();
  const vdaa = await dumpSet(dir, { disk: 'vdaa' }, log);
  expect(vdaa.entries).toEqual([JSON.parse(metaText(join(dir, 'vdaa.full.data')))]);
  // its metadata says vda: listed, with warnings
  expect(log.at('WARNING')[0]).toBe(`[${join(dir, 'vdaa.full.data')}]: its metadata names disk [vda] but the file name says [vdaa].`);
  await expect(dumpSet(dir, { disk: 'vdb' }, recordingLogger())).rejects.toThrow(RestoreInputError);
});

test('--sequence: the listed files in the given order, --disk filters it', async () => {
  const dir = join(SETS, 'd2', 'backup');
  const seq = ['vda.inc.virtnbdbackup.3.data', 'sdb.full.data', 'vda.full.data'];
  const { entries } = await dumpSet(dir, { sequence: seq }, recordingLogger());
  expect(entries).toEqual(seq.map((n) => JSON.parse(metaText(join(dir, n)))));
  const only = await dumpSet(dir, { sequence: seq, disk: 'vda' }, recordingLogger());
  expect(only.entries).toEqual([seq[0], seq[2]].map((n) => JSON.parse(metaText(join(dir, n!)))));
});

test('an unreadable header is reported and skipped; the rest is dumped', async () => {
  const dir = copySet('d1');
  const victim = join(dir, 'sdb.inc.virtnbdbackup.2.data');
  const b = readFileSync(victim);
  b[40] = 0x78; // the metadata JSON's "{"
  writeFileSync(victim, b);
  const log = recordingLogger();
  const { entries, errors } = await dumpSet(dir, {}, log);
  expect(errors).toBe(1);
  expect(entries).toHaveLength(9);
  expect(log.at('ERROR')).toHaveLength(1);
  expect(log.at('ERROR')[0]).toContain(victim);
  expect(log.at('ERROR')[0]).toContain('bad metadata');
  // sdb's diff and inc.3 hang off the missing checkpoint: sdb listed in name order, with a warning
  const names = [...chainOf('sdb', UNIX.d1).filter((n) => !n.includes('inc.virtnbdbackup.2'))].sort();
  expect(entries.slice(0, 4)).toEqual(names.map((n) => JSON.parse(metaText(join(dir, n)))));
  expect(entries.slice(4)).toEqual(chainOf('vda', UNIX.d1).map((n) => JSON.parse(metaText(join(dir, n)))));
  expect(log.at('WARNING')).toHaveLength(1);
  expect(log.at('WARNING')[0]).toMatch(/Unable to place 4 data file\(s\) of disk \[sdb\] in chain order \(broken chain/);
});

test('a chain with a gap: that disk in name order with a warning, the other disk in chain order', async () => {
  const dir = copySet('d2');
  unlinkSync(join(dir, 'vda.inc.virtnbdbackup.1.data'));
  const log = recordingLogger();
  const { entries, errors } = await dumpSet(dir, {}, log);
  expect(errors).toBe(0);
  const vda = chainOf('vda', UNIX.d2).filter((n) => !n.includes('inc.virtnbdbackup.1')).sort();
  expect(entries).toEqual([...chainOf('sdb', UNIX.d2), ...vda].map((n) => JSON.parse(metaText(join(dir, n)))));
  expect(log.at('WARNING')).toEqual([
    expect.stringMatching(/^Unable to place 4 data file\(s\) of disk \[vda\] in chain order \(.*virtnbdbackup\.1.*\); listing them in name order: vda\.diff/),
  ]);
});

test('a fallback full starts a second chain: chains oldest first, diffs after the file that created their parent', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtnbd-dump-'));
  temps.push(dir);
  const files: [string, string, string, boolean][] = [
    // name, checkpointName, parentCheckpoint, incremental
    ['vdx.full.data', 'virtnbdbackup.0', '', false],
    ['vdx.inc.virtnbdbackup.1.data', 'virtnbdbackup.1', 'virtnbdbackup.0', true],
    ['vdx.diff.1700000000.data', 'virtnbdbackup.2', 'virtnbdbackup.1', true],
    ['vdx.inc.virtnbdbackup.2.data', 'virtnbdbackup.2', '', false], // fallback full
    ['vdx.inc.virtnbdbackup.3.data', 'virtnbdbackup.3', 'virtnbdbackup.2', true],
    ['vdx.diff.1600000000.data', 'virtnbdbackup.4', 'virtnbdbackup.3', true],
  ];
  for (const [name, checkpointName, parentCheckpoint, incremental] of files) {
    const meta = buildMetadata({ virtualSize: 4096, dataSize: 0, diskName: 'vdx', diskFormat: 'qcow2', checkpointName, parentCheckpoint, incremental, compressed: false, date: '2026-01-01T00:00:00' });
    await (await SavesetWriter.create(join(dir, name), meta, { compress: false, fsync: false })).finish();
  }
  const log = recordingLogger();
  const { entries } = await dumpSet(dir, {}, log);
  expect(log.counts).toEqual({ warnings: 0, errors: 0 });
  expect(log.at('INFO').filter((m) => m.startsWith('/'))).toEqual(files.map(([n]) => join(dir, n)));
  expect(entries.map((e) => e['checkpointName'])).toEqual(files.map(([, c]) => c));
});

test('raw image files are noted, not counted as errors', async () => {
  const dir = copySet('d1');
  writeFileSync(join(dir, 'vdb.copy.data'), randomBytes(4096));
  const log = recordingLogger();
  const { entries, errors } = await dumpSet(dir, {}, log);
  expect(errors).toBe(0);
  expect(entries).toHaveLength(10);
  expect(log.at('INFO')).toContain(`[${join(dir, 'vdb.copy.data')}] is a raw image: it has no metadata to dump.`);
});

test('input errors', async () => {
  await expect(dumpSet('/nonexistent/x', {}, recordingLogger())).rejects.toThrow('Backup source [/nonexistent/x] does not exist.');
  const empty = mkdtempSync(join(tmpdir(), 'virtnbd-dump-'));
  temps.push(empty);
  await expect(dumpSet(empty, {}, recordingLogger())).rejects.toThrow(`No data files found in directory: [${empty}]`);
});

describe('formatDump', () => {
  test('Python json.dumps(indent=4) layout and escaping', () => {
    expect(formatDump([])).toBe('[]');
    expect(formatDump([{}])).toBe('[\n    {}\n]');
    expect(formatDump([{ a: 1, b: 'x\u00e9"\n', c: [1, 2], d: [], e: false, f: null }])).toBe(
      '[\n    {\n        "a": 1,\n        "b": "x\\u00e9\\"\\n",\n        "c": [\n            1,\n            2\n        ],\n' +
        '        "d": [],\n        "e": false,\n        "f": null\n    }\n]',
    );
  });

  test('non-integer numbers in unknown keys are written like Python floats', () => {
    const out = (v: number): string => formatDump([{ v }]).split('"v": ')[1]!.split('\n')[0]!;
    expect(out(1.5)).toBe('1.5');
    expect(out(-0.25)).toBe('-0.25');
    expect(out(1e-5)).toBe('1e-05');
    expect(out(0.0001)).toBe('0.0001');
    expect(out(1.5e16)).toBe('1.5e+16');
    expect(out(1e22)).toBe('1e+22');
    expect(out(123456.789)).toBe('123456.789');
    expect(out(2 ** 53 + 2)).toBe('9007199254740994.0');
  });
});
