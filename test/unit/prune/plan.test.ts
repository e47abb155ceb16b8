import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChainFile, BackupDir } from '../../../src/chain/discover.js';
import { parseDataFileName } from '../../../src/chain/names.js';
import { chooseCut, collectPoints, parseDuration, pointTime, type Point } from '../../../src/prune/points.js';
import { planPrune, removalOrder, sideFilesOf } from '../../../src/prune/plan.js';
import { parseJournal, JournalError } from '../../../src/prune/journal.js';

function f(name: string, cp: string, parent: string, incremental: boolean, date = '2026-01-01T00:00:00'): ChainFile {
  const p = parseDataFileName(name);
  if (!p) throw new Error(`bad name ${name}`);
  return {
    ...p, name, path: `/set/${name}`,
    metadata: { virtualSize: 1, dataSize: 0, date, diskName: p.dev, diskFormat: 'qcow2', checkpointName: cp,
      compressed: false, compressionMethod: 'lz4', parentCheckpoint: parent, incremental, streamVersion: 2 },
  };
}

/** The upstream fixture shape for disk `dev`: full, inc1, inc2, diff on .2 (named .3), inc3; dates one day apart. */
function fixture(dev: string, diffIdent = '1795884514'): ChainFile[] {
  return [
    f(`${dev}.full.data`, 'virtnbdbackup.0', '', false, '2026-01-01T00:00:00'),
    f(`${dev}.inc.virtnbdbackup.1.data`, 'virtnbdbackup.1', 'virtnbdbackup.0', true, '2026-01-02T00:00:00.5'),
    f(`${dev}.inc.virtnbdbackup.2.data`, 'virtnbdbackup.2', 'virtnbdbackup.1', true, '2026-01-03T00:00:00'),
    f(`${dev}.diff.${diffIdent}.data`, 'virtnbdbackup.3', 'virtnbdbackup.2', true, '2026-01-03T12:00:00'),
    f(`${dev}.inc.virtnbdbackup.3.data`, 'virtnbdbackup.3', 'virtnbdbackup.2', true, '2026-01-04T00:00:00'),
  ];
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'prune-unit-'));
  for (const n of ['vmconfig.virtnbdbackup.0.xml', 'vmconfig.virtnbdbackup.1.xml', 'vmconfig.virtnbdbackup.3.xml', 'vmconfig.1795884514.xml',
    'vda.virtnbdbackup.1.qcow.json', 'vda.virtnbdbackup.11.qcow.json', 'OVMF_VARS.fd.virtnbdbackup.1', 'osinfo.virtnbdbackup.0',
    'vda.inc.virtnbdbackup.1.data', 'vda.inc.virtnbdbackup.1.data.chksum', 'x.cpt', 'backup.inc.01012026000000.log']) writeFileSync(join(dir, n), 'x');
  mkdirSync(join(dir, 'checkpoints'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const setOf = (disks: Record<string, ChainFile[]>): BackupDir => ({ dir, disks: new Map(Object.entries(disks)), partials: [] });
const labels = (ps: Point[]) => ps.map((p) => p.label);

describe('points', () => {
  test('two disks, diffs matched by position although their idents differ by a second (original writer)', () => {
    const { points } = collectPoints(setOf({ vda: fixture('vda'), sdb: fixture('sdb', '1795884515') }));
    expect(points.map((p) => p.key)).toEqual(['virtnbdbackup.0', 'virtnbdbackup.1', 'virtnbdbackup.2', 'virtnbdbackup.2+0', 'virtnbdbackup.3']);
    expect(points[3]!.files.size).toBe(2);
  });
  test('chooseCut: keep-last, a delta moves the cut back to its checkpoint, the newest point always stays', () => {
    const { points } = collectPoints(setOf({ vda: fixture('vda') }));
    expect(chooseCut(points, { keepLast: 1 }, 0)).toEqual({ index: 4, movedToCheckpoint: false });
    expect(chooseCut(points, { keepLast: 2 }, 0)).toEqual({ index: 2, movedToCheckpoint: true });
    expect(chooseCut(points, { keepLast: 5 }, 0).index).toBe(0);
    expect(chooseCut(points, { keepLast: 50 }, 0).index).toBe(0);
    // keep-within: everything from Jan 2 12:00 on; union with keep-last
    const now = pointTime('2026-01-04T12:00:00');
    expect(chooseCut(points, { keepWithinMs: 2 * 86400e3 }, now).index).toBe(2);
    expect(chooseCut(points, { keepWithinMs: 3600e3 }, now).index).toBe(4);
    expect(chooseCut(points, { keepWithinMs: 3600e3, keepLast: 3 }, now)).toEqual({ index: 2, movedToCheckpoint: false });
  });
  test('durations and dates', () => {
    expect(parseDuration('30d')).toBe(30 * 86400e3);
    expect(parseDuration('12h')).toBe(12 * 3600e3);
    expect(parseDuration('2w')).toBe(14 * 86400e3);
    expect(parseDuration('3 days')).toBeUndefined();
    expect(parseDuration('-1d')).toBeUndefined();
    expect(pointTime('2026-01-02T00:00:00.5') - pointTime('2026-01-02T00:00:00')).toBe(500);
    expect(pointTime('garbage')).toBeNaN();
  });
});

describe('plan', () => {
  test('cut at .3: the inc of .3 becomes the base; removal newest first keeps every prefix a chain', () => {
    const p = planPrune(setOf({ vda: fixture('vda') }), { keepLast: 1 }, 0);
    expect(p.cut).toBe('virtnbdbackup.3');
    expect(p.disks).toEqual([{
      dev: 'vda', staging: 'vda.inc.virtnbdbackup.3.data', final: 'vda.full.data',
      remove: ['vda.diff.1795884514.data', 'vda.inc.virtnbdbackup.2.data', 'vda.inc.virtnbdbackup.1.data', 'vda.full.data'],
    }]);
    expect(labels(p.pruned)).toEqual(['virtnbdbackup.0', 'virtnbdbackup.1', 'virtnbdbackup.2', '1795884514']);
    // side files of removed points only; never data, checksums, .cpt, logs, nor `.11` for `.1`
    expect(p.sideFiles).toEqual(['OVMF_VARS.fd.virtnbdbackup.1', 'osinfo.virtnbdbackup.0', 'vda.virtnbdbackup.1.qcow.json',
      'vmconfig.1795884514.xml', 'vmconfig.virtnbdbackup.0.xml', 'vmconfig.virtnbdbackup.1.xml']);
  });
  test('nothing to prune; a disk without the cut checkpoint is left alone', () => {
    expect(planPrune(setOf({ vda: fixture('vda') }), { keepLast: 9 }, 0).cut).toBeUndefined();
    const young = [f('vdb.full.data', 'virtnbdbackup.3', '', false)];
    const p = planPrune(setOf({ vda: fixture('vda'), vdb: young }), { keepLast: 1 }, 0);
    expect(p.disks.map((d) => d.dev)).toEqual(['vda']);
    const q = planPrune(setOf({ vda: fixture('vda'), vdb: [f('vdb.copy.data', 'virtnbdbackup.0', '', false)] }), { keepLast: 1 }, 0);
    expect(q.untouched).toEqual([{ dev: 'vdb', reason: expect.stringMatching(/no backup at checkpoint/) }]);
  });
  test('a fallback full in the chain: the older chain goes with the first prune past it', () => {
    const files = [
      ...fixture('vda').slice(0, 3),
      f('vda.inc.virtnbdbackup.3.data', 'virtnbdbackup.3', '', false), // fallback full
      f('vda.inc.virtnbdbackup.4.data', 'virtnbdbackup.4', 'virtnbdbackup.3', true),
      f('vda.inc.virtnbdbackup.5.data', 'virtnbdbackup.5', 'virtnbdbackup.4', true),
    ];
    const p = planPrune(setOf({ vda: files }), { keepLast: 1 }, 0);
    expect(p.cut).toBe('virtnbdbackup.5');
    expect(p.disks[0]!.remove).toEqual(['vda.inc.virtnbdbackup.4.data', 'vda.inc.virtnbdbackup.3.data', 'vda.inc.virtnbdbackup.2.data', 'vda.inc.virtnbdbackup.1.data', 'vda.full.data']);
    expect(removalOrder(files).map((x) => x.name)[0]).toBe('vda.inc.virtnbdbackup.5.data');
  });
  test('side files of chain checkpoints (--chain)', () => {
    writeFileSync(join(dir, 'vmconfig.virtnbdbackup.daily.1.xml'), 'x');
    expect(sideFilesOf(dir, new Set(['virtnbdbackup.daily.1']))).toEqual(['vmconfig.virtnbdbackup.daily.1.xml']);
  });
});

describe('journal', () => {
  const good = { version: 1, cut: 'virtnbdbackup.3', started: 'x', disks: [{ dev: 'vda', staging: 'vda.inc.virtnbdbackup.3.data', final: 'vda.full.data', mtimeMs: 1, remove: ['vda.full.data'] }], sideFiles: ['vmconfig.virtnbdbackup.0.xml'] };
  test('a valid journal parses', () => {
    expect(parseJournal(good, 'j').disks[0]!.remove).toEqual(['vda.full.data']);
  });
  test.each([
    ['path in remove', { disks: [{ ...good.disks[0], remove: ['../etc/passwd'] }] }],
    ['other disk in remove', { disks: [{ ...good.disks[0], remove: ['sdb.full.data'] }] }],
    ['absolute side file', { sideFiles: ['/etc/passwd'] }],
    ['data file as side file', { sideFiles: ['vda.full.data'] }],
    ['wrong final', { disks: [{ ...good.disks[0], final: 'vda.copy.data' }] }],
    ['version', { version: 2 }],
  ])('refused: %s', (_l, over) => {
    expect(() => parseJournal({ ...good, ...over }, 'j')).toThrow(JournalError);
  });
});

test('side files a disk left alone still needs are kept', () => {
  const vdb = [f('vdb.full.data', 'virtnbdbackup.0', '', false), f('vdb.inc.virtnbdbackup.1.data', 'virtnbdbackup.1', 'virtnbdbackup.0', true)];
  const p = planPrune(setOf({ vda: fixture('vda'), vdb }), { keepLast: 1 }, 0);
  expect(p.untouched.map((u) => u.dev)).toEqual(['vdb']);
  expect(p.sideFiles).toEqual(['vmconfig.1795884514.xml']);
});
