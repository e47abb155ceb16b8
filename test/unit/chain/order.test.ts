import { selectChain, sequenceChain, availablePoints, ChainError } from '../../../src/chain/order.js';
import type { ChainFile } from '../../../src/chain/discover.js';
import { parseDataFileName } from '../../../src/chain/names.js';

function f(name: string, cp: string, parent: string, incremental: boolean, date = '2026-01-01T00:00:00'): ChainFile {
  const p = parseDataFileName(name);
  if (!p) throw new Error(`bad name ${name}`);
  return {
    ...p, name, path: `/set/${name}`,
    metadata: { virtualSize: 1, dataSize: 0, date, diskName: p.dev, diskFormat: 'qcow2', checkpointName: cp,
      compressed: false, compressionMethod: 'lz4', parentCheckpoint: parent, incremental, streamVersion: 2 },
  };
}

// The shape of the upstream fixture sets: full, inc1, inc2, diff (names the next checkpoint), inc3.
const full = f('vda.full.data', 'virtnbdbackup.0', '', false);
const inc1 = f('vda.inc.virtnbdbackup.1.data', 'virtnbdbackup.1', 'virtnbdbackup.0', true);
const inc2 = f('vda.inc.virtnbdbackup.2.data', 'virtnbdbackup.2', 'virtnbdbackup.1', true);
const diff = f('vda.diff.1795884514.data', 'virtnbdbackup.3', 'virtnbdbackup.2', true);
const inc3 = f('vda.inc.virtnbdbackup.3.data', 'virtnbdbackup.3', 'virtnbdbackup.2', true);
const set = [inc3, diff, full, inc2, inc1]; // listing order must not matter
const names = (c: { files: ChainFile[] }) => c.files.map((x) => x.name);

describe('selectChain', () => {
  test('newest point: base, creating deltas, diff after the inc that created its parent', () => {
    const c = selectChain('vda', set);
    expect(names(c)).toEqual([full.name, inc1.name, inc2.name, diff.name, inc3.name]);
    expect(c.checkpoint).toBe('virtnbdbackup.3');
  });
  test('--until a checkpoint: the state when it was created (diff attached to it excluded)', () => {
    expect(names(selectChain('vda', set, 'virtnbdbackup.2'))).toEqual([full.name, inc1.name, inc2.name]);
    expect(names(selectChain('vda', set, 'virtnbdbackup.0'))).toEqual([full.name]);
    // a diff carries the next checkpoint's name but never stops --until early (D8); it stays in
    // place before inc.3 as in the newest point (BEHAVIOUR.md §11.2 step 3)
    expect(names(selectChain('vda', set, 'virtnbdbackup.3'))).toEqual([full.name, inc1.name, inc2.name, diff.name, inc3.name]);
  });
  test('--until a diff ident or a data file name', () => {
    expect(names(selectChain('vda', set, '1795884514'))).toEqual([full.name, inc1.name, inc2.name, diff.name]);
    expect(names(selectChain('vda', set, inc1.name))).toEqual([full.name, inc1.name]);
  });
  test('unknown --until lists what exists', () => {
    expect(() => selectChain('vda', set, 'virtnbdbackup.9')).toThrow(/virtnbdbackup\.9.*available: virtnbdbackup\.0, virtnbdbackup\.1/);
    expect(availablePoints('vda', set)).toEqual(expect.arrayContaining(['virtnbdbackup.3', '1795884514']));
  });
  test('several diffs on one parent in time order', () => {
    const d1 = f('vda.diff.1700000100.data', 'virtnbdbackup.1', 'virtnbdbackup.0', true);
    const d2 = f('vda.diff.1700000050.data', 'virtnbdbackup.1', 'virtnbdbackup.0', true);
    expect(names(selectChain('vda', [d1, full, d2]))).toEqual([full.name, d2.name, d1.name]);
  });
  test('fallback full (inc named, not incremental) starts a new base (D5)', () => {
    const fb = f('vda.inc.virtnbdbackup.3.data', 'virtnbdbackup.3', '', false);
    const inc4 = f('vda.inc.virtnbdbackup.4.data', 'virtnbdbackup.4', 'virtnbdbackup.3', true);
    const s = [full, inc1, inc2, fb, inc4];
    expect(names(selectChain('vda', s))).toEqual([fb.name, inc4.name]);
    expect(names(selectChain('vda', s, 'virtnbdbackup.1'))).toEqual([full.name, inc1.name]);
  });
  test('a missing inc is a gap, not a silent skip', () => {
    expect(() => selectChain('vda', [full, inc1, inc3])).toThrow(ChainError);
    expect(() => selectChain('vda', [full, inc1, inc3])).toThrow(/virtnbdbackup\.2/);
  });
  test("D1-damaged set (offline inc replaced the inc that created its parent) is refused", () => {
    const offline = f('vda.inc.virtnbdbackup.2.data', 'virtnbdbackup.2', 'virtnbdbackup.2', true);
    const inc3b = f('vda.inc.virtnbdbackup.3.data', 'virtnbdbackup.3', 'virtnbdbackup.2', true);
    expect(() => selectChain('vda', [full, inc1, offline, inc3b])).toThrow(/broken chain/);
  });
  test('conflicting creating deltas and other disks are refused', () => {
    const twin = f('vda.inc.x1.data', 'virtnbdbackup.1', 'virtnbdbackup.0', true);
    expect(() => selectChain('vda', [full, inc1, twin])).toThrow(/conflicting/);
    expect(() => selectChain('vda', [full, f('vdb.inc.virtnbdbackup.1.data', 'virtnbdbackup.1', 'virtnbdbackup.0', true)])).toThrow(/vdb/);
  });
  test('no base', () => {
    expect(() => selectChain('vda', [inc1])).toThrow(/no full or copy/);
  });
  test('copy set', () => {
    const copy = f('vda.copy.data', 'virtnbdbackup.0', '', false);
    const c = selectChain('vda', [copy]);
    expect(names(c)).toEqual([copy.name]);
    expect(c.checkpoint).toBeUndefined();
  });
});

describe('sequenceChain', () => {
  test('applies the given order, first must be a base', () => {
    expect(names(sequenceChain([full, inc1, inc2]))).toEqual([full.name, inc1.name, inc2.name]);
    expect(() => sequenceChain([inc1, full])).toThrow(/Sequence must start with full or copy backup/);
  });
  test('--until with a sequence stops after the file that created it (D20)', () => {
    expect(names(sequenceChain([full, inc1, inc2, inc3], 'virtnbdbackup.1'))).toEqual([full.name, inc1.name]);
    expect(() => sequenceChain([full, inc1], 'virtnbdbackup.7')).toThrow(ChainError);
  });
  test('a file of another disk is refused', () => {
    const other = f('sdb.inc.virtnbdbackup.1.data', 'virtnbdbackup.1', 'virtnbdbackup.0', true);
    expect(() => sequenceChain([full, other])).toThrow(/sdb/);
  });
});

describe('names', () => {
  test('exact parsing (D32): vda vs vdaa, idents, non-data files', () => {
    expect(parseDataFileName('vdaa.full.data')?.dev).toBe('vdaa');
    expect(parseDataFileName('vda.inc.virtnbdbackup.12.data')).toEqual({ dev: 'vda', level: 'inc', ident: 'virtnbdbackup.12' });
    expect(parseDataFileName('vda.full.data.chksum')).toBeUndefined();
    expect(parseDataFileName('vda.full.data.partial')).toBeUndefined();
    expect(parseDataFileName('../x.full.data')).toBeUndefined();
    expect(parseDataFileName('vda.inc..data')).toBeUndefined();
  });
});
