/**
 * virtnbdrestore verify (src/restore/verify.ts): checksums and the structural pass, on copies of
 * the original's fixture sets (test/fixtures/upstream-sets) and on files made with our writer.
 */
import { randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync, truncateSync, unlinkSync, writeFileSync, statSync, copyFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ADLER32 from 'adler-32';
import { adler32File, formatChecksum } from '../../../src/saveset/adler32.js';
import { indexSaveset } from '../../../src/saveset/reader.js';
import { SavesetWriter } from '../../../src/saveset/writer.js';
import type { DataFrame, Metadata } from '../../../src/saveset/types.js';
import { RestoreInputError } from '../../../src/restore/dump-files.js';
import { FastAdler32 } from '../../../src/saveset/adler32-wasm.js';
import { verifyStreamFile } from '../../../src/restore/verify-stream.js';
import { verifySet } from '../../../src/restore/verify.js';
import { recordingLogger } from '../backup/recording-logger.js';
import { flipByte } from '../../helpers/saveset-edit.js';

const SETS = fileURLToPath(new URL('../../fixtures/upstream-sets/', import.meta.url));

const temps: string[] = [];
afterAll(() => {
  for (const t of temps) rmSync(t, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'virtnbd-verify-'));
  temps.push(d);
  return d;
}
/** A private copy of a fixture set's backup directory. */
function copySet(set: 'd1' | 'd2'): string {
  const d = tempDir();
  cpSync(join(SETS, set, 'backup'), d, { recursive: true });
  return d;
}
const dataFilesOf = (dir: string): string[] => readdirSync(dir).filter((n) => n.endsWith('.data')).sort();
const firstData = (path: string): DataFrame => indexSaveset(path).frames.find((f): f is DataFrame => f.kind === 'data')!;

function meta(over: Partial<Metadata>): Metadata {
  return {
    virtualSize: 1 << 20, dataSize: 0, date: '2026-01-02T03:04:05', diskName: 'vdx', diskFormat: 'qcow2',
    checkpointName: 'virtnbdbackup.0', compressed: false, compressionMethod: 'lz4', parentCheckpoint: '',
    incremental: false, streamVersion: 2, ...over,
  };
}

describe('FastAdler32', () => {
  const ref = (b: Uint8Array): number => ADLER32.buf(b, 1) >>> 0;
  test.each([[false], [true]])('equals zlib adler32 (portable=%s) for many lengths and alignments', (portable) => {
    const data = randomBytes(300_000);
    for (const [off, len] of [[0, 0], [0, 1], [1, 15], [3, 16], [5, 17], [7, 1000], [0, 32768], [9, 32769], [11, 65536 * 3 + 5], [0, 300_000]] as const) {
      const a = new FastAdler32(0, portable);
      a.update(data.subarray(off, off + len));
      expect(a.digest()).toBe(ref(data.subarray(off, off + len)));
    }
    // worst case for the lane sums: all bytes 0xff, through the scratch copy and piecewise
    const ff = Buffer.alloc(3 << 20, 0xff);
    const a = new FastAdler32(0, portable);
    a.update(ff.subarray(0, 12345));
    a.update(ff.subarray(12345));
    expect(a.digest()).toBe(ref(ff));
  });

  test('data read into readBuffer is checksummed in place, with the same result', () => {
    const a = new FastAdler32(1 << 20);
    expect(a.readBuffer.length).toBe(1 << 20);
    const data = randomBytes(1 << 20);
    data.copy(a.readBuffer);
    a.update(a.readBuffer.subarray(0, 1000));
    a.update(a.readBuffer.subarray(1000));
    expect(a.digest()).toBe(ref(data));
    expect(a.accelerated).toBe(true);
  });

  test('the documented fixture value: d1 vda.full.data = 1731888446', async () => {
    const r = await verifyStreamFile(join(SETS, 'd1', 'backup', 'vda.full.data'));
    expect(r.checksum).toBe(1731888446);
    expect(r.bytes).toBe(2_556_680);
    expect(r.problems).toEqual([]);
  });
});

describe('fixture sets verify clean', () => {
  test.each([['d1'], ['d2']] as const)('%s', async (set) => {
    const log = recordingLogger();
    const res = await verifySet(join(SETS, set, 'backup'), {}, log);
    expect(res).toEqual({ ok: 10, failed: 0, skipped: 0, problems: [] });
    expect(log.counts).toEqual({ warnings: 0, errors: 0 });
    expect(log.at('INFO').filter((m) => m.startsWith('OK: ['))).toHaveLength(10);
  });

  test('each file: checksum equals adler32File, compressed flag, metadata', async () => {
    for (const set of ['d1', 'd2'] as const) {
      const dir = join(SETS, set, 'backup');
      for (const name of dataFilesOf(dir)) {
        const r = await verifyStreamFile(join(dir, name), { expectDev: name.split('.')[0] });
        expect(r.problems).toEqual([]);
        expect(r.checksum).toBe(await adler32File(join(dir, name)));
        expect(r.compressed).toBe(set === 'd2');
        expect(r.metadata?.diskName).toBe(name.split('.')[0]);
      }
    }
  });
});

describe('damage', () => {
  test('one flipped byte in an uncompressed data payload: checksum mismatch for that file only', async () => {
    const dir = copySet('d1');
    const victim = join(dir, 'vda.inc.virtnbdbackup.1.data');
    const stored = Number(readFileSync(`${victim}.chksum`, 'latin1'));
    flipByte(victim, firstData(victim).payloadOffset + 10);
    const computed = await adler32File(victim);
    expect(computed).not.toBe(stored);

    const log = recordingLogger();
    const res = await verifySet(dir, {}, log);
    expect(res.ok).toBe(9);
    expect(res.failed).toBe(1);
    expect(res.problems).toEqual([{ file: victim, message: `Stored sums do not match: [${stored}]!=[${computed}]` }]);
    expect(log.at('ERROR')).toEqual([`Stored sums do not match: [${stored}]!=[${computed}]`]);
    // the ERROR follows the line naming the file
    const i = log.records.findIndex((r) => r.level === 'ERROR');
    expect(log.records.slice(0, i).reverse().find((r) => r.message.startsWith('Computing checksum for:'))?.message).toBe(`Computing checksum for: ${victim}`);
  });

  test('a flipped byte inside an LZ4 frame with the .chksum deleted: the LZ4 error is still found, with its offset', async () => {
    const dir = copySet('d2');
    const victim = join(dir, 'vda.full.data');
    const frame = indexSaveset(victim).frames.filter((f): f is DataFrame => f.kind === 'data')[1]!;
    const chunk = frame.chunks![0]!;
    flipByte(victim, chunk.offset + Math.floor(chunk.csize / 2));
    unlinkSync(`${victim}.chksum`);

    const log = recordingLogger();
    const res = await verifySet(dir, {}, log);
    expect(res.failed).toBe(1);
    expect(res.ok).toBe(9);
    expect(res.problems).toHaveLength(1);
    expect(res.problems[0]).toMatchObject({ file: victim, offset: chunk.offset });
    expect(res.problems[0]!.message).toMatch(/corrupt LZ4 frame/);
    expect(log.at('ERROR')).toEqual([`${victim}: at byte offset ${chunk.offset}: ${res.problems[0]!.message}`]);
    expect(log.at('INFO')).toContain(`No checksum found for file: [${victim}], checksum comparison skipped.`);
  });

  test('damage in the second LZ4 frame of a multi-frame data frame is located there', async () => {
    const dir = tempDir();
    const path = join(dir, 'vdx.full.data');
    const len = (32 << 20) + (8 << 20); // two LZ4 frames: 32 MiB + 8 MiB
    const w = await SavesetWriter.create(path, meta({ virtualSize: len + 4096, dataSize: len, compressed: 2 }), { compress: 2, fsync: false });
    const payload = Buffer.alloc(len);
    for (let i = 0; i < len; i += 4096) payload.writeUInt32LE(i, i);
    await w.data(0, payload);
    await w.zero(len, 4096);
    await w.finish();
    expect((await verifyStreamFile(path)).problems).toEqual([]);
    const chunks = firstData(path).chunks!;
    expect(chunks).toHaveLength(2);
    flipByte(path, chunks[1]!.offset + 100);
    const r = await verifyStreamFile(path);
    expect(r.problems).toHaveLength(1);
    expect(r.problems[0]!.offset).toBe(chunks[1]!.offset);
    expect(r.problems[0]!.message).toMatch(/corrupt LZ4 frame/);
    expect(r.checksum).toBe(await adler32File(path));
  });

  test('a damaged frame header is found by the structural pass even when the .chksum matches', async () => {
    const dir = copySet('d1');
    const victim = join(dir, 'sdb.inc.virtnbdbackup.1.data');
    const hdrAt = firstData(victim).headerOffset;
    flipByte(victim, hdrAt + 10); // a hex digit of `start`
    writeFileSync(`${victim}.chksum`, formatChecksum(await adler32File(victim)));
    const res = await verifySet(dir, { disk: 'sdb' }, recordingLogger());
    expect(res.failed).toBe(1);
    expect(res.ok).toBe(4);
    expect(res.problems).toEqual([{ file: victim, offset: hdrAt + 10, message: 'bad header: start is not 16 hex digits' }]);
  });

  test.each([['d1'], ['d2']] as const)('%s: a truncated file is reported with an offset (and its checksum no longer matches)', async (set) => {
    const dir = copySet(set);
    const victim = join(dir, 'vda.full.data');
    const size = statSync(victim).size;
    truncateSync(victim, Math.floor(size / 2));
    const res = await verifySet(dir, { disk: 'vda' }, recordingLogger());
    expect(res.failed).toBe(1);
    const mine = res.problems.filter((p) => p.file === victim);
    expect(mine.length).toBe(res.problems.length);
    const structural = mine.filter((p) => p.offset !== undefined);
    expect(structural.length).toBeGreaterThanOrEqual(1);
    expect(structural[0]!.message).toMatch(set === 'd1' ? /truncated file/ : /trailer missing\/corrupt/);
    expect(structural[0]!.offset).toBeLessThanOrEqual(size);
    expect(mine.some((p) => p.message.startsWith('Stored sums do not match:'))).toBe(true);
  });

  test('a .chksum containing None is a warning, not a failure', async () => {
    const dir = copySet('d1');
    writeFileSync(join(dir, 'sdb.full.data.chksum'), 'None');
    const log = recordingLogger();
    const res = await verifySet(dir, {}, log);
    expect(res).toEqual({ ok: 9, failed: 0, skipped: 1, problems: [] });
    expect(log.at('WARNING')).toEqual([`Checksum file [${join(dir, 'sdb.full.data')}.chksum] holds no usable checksum ("None"), checksum comparison skipped.`]);
    expect(log.counts.errors).toBe(0);
  });

  test('a missing .chksum is an INFO: the file is skipped, its structure still verified', async () => {
    const dir = copySet('d2');
    unlinkSync(join(dir, 'sdb.diff.1795884529.data.chksum'));
    const log = recordingLogger();
    const res = await verifySet(dir, {}, log);
    expect(res).toEqual({ ok: 9, failed: 0, skipped: 1, problems: [] });
    expect(log.counts).toEqual({ warnings: 0, errors: 0 });
  });

  test('every file is checked: problems in two files of two disks are all reported', async () => {
    const dir = copySet('d1');
    const a = join(dir, 'sdb.full.data');
    const b = join(dir, 'vda.inc.virtnbdbackup.3.data');
    flipByte(a, firstData(a).payloadOffset);
    truncateSync(b, statSync(b).size - 1);
    const res = await verifySet(dir, {}, recordingLogger());
    expect(res.failed).toBe(2);
    expect(res.ok).toBe(8);
    expect(new Set(res.problems.map((p) => p.file))).toEqual(new Set([a, b]));
  });

  test('dataSize that disagrees with the frames, and a base stream with a gap (warning)', async () => {
    const dir = tempDir();
    const path = join(dir, 'vdx.full.data');
    const w = await SavesetWriter.create(path, meta({ virtualSize: 65536, dataSize: 8192 }), { compress: false, fsync: false });
    await w.data(4096, Buffer.alloc(8192, 7)); // leaves [0, 4096) and [12288, 65536) uncovered
    await w.finish();
    const log = recordingLogger();
    expect((await verifyStreamFile(path, { log })).problems).toEqual([]);
    expect(log.at('WARNING')).toEqual([
      `${path}: the frames of this full backup leave 2 range(s) of the disk uncovered (first: bytes 0 to 4096); they read as zeros.`,
    ]);
    // dataSize 8192 → 8193 in the JSON (same length), .chksum rewritten
    const b = readFileSync(path);
    const at = b.indexOf('"dataSize": 8192');
    b.write('"dataSize": 8193', at, 'latin1');
    writeFileSync(path, b);
    writeFileSync(`${path}.chksum`, formatChecksum(await adler32File(path)));
    const res = await verifySet(dir, {}, recordingLogger());
    expect(res.problems).toEqual([{ file: path, offset: 40, message: 'size mismatch: data frames hold 8192 bytes, metadata dataSize is 8193' }]);
  });
});

describe('selection', () => {
  test('--disk is an exact match: vda does not select vdaa', async () => {
    const dir = copySet('d1');
    copyFileSync(join(dir, 'vda.full.data'), join(dir, 'vdaa.full.data'));
    copyFileSync(join(dir, 'vda.full.data.chksum'), join(dir, 'vdaa.full.data.chksum'));
    const log = recordingLogger();
    expect(await verifySet(dir, { disk: 'vda' }, log)).toEqual({ ok: 5, failed: 0, skipped: 0, problems: [] });
    expect(log.at('INFO').filter((m) => m.startsWith('Computing checksum for:'))).toEqual(
      dataFilesOf(dir).filter((n) => n.startsWith('vda.')).map((n) => `Computing checksum for: ${join(dir, n)}`),
    );
    // the copy itself: checksum fine, but its metadata names another disk (FORMAT.md §9 check 18)
    const res = await verifySet(dir, { disk: 'vdaa' }, recordingLogger());
    expect(res.failed).toBe(1);
    expect(res.problems).toEqual([
      { file: join(dir, 'vdaa.full.data'), offset: 40, message: 'metadata names disk [vda] but the file name says [vdaa]' },
    ]);
  });

  test('--sequence: only the listed files, in the given order; with --disk filtered', async () => {
    const dir = join(SETS, 'd2', 'backup');
    const seq = ['vda.inc.virtnbdbackup.2.data', 'sdb.full.data', 'vda.full.data'];
    const log = recordingLogger();
    expect(await verifySet(dir, { sequence: seq }, log)).toEqual({ ok: 3, failed: 0, skipped: 0, problems: [] });
    expect(log.at('INFO').filter((m) => m.startsWith('Computing checksum for:'))).toEqual(seq.map((n) => `Computing checksum for: ${join(dir, n)}`));
    const log2 = recordingLogger();
    expect((await verifySet(dir, { sequence: seq, disk: 'vda' }, log2)).ok).toBe(2);
    expect(log2.at('INFO').filter((m) => m.startsWith('Computing checksum for:'))).toHaveLength(2);
  });

  test('a missing file in --sequence is a failure, the others are still verified', async () => {
    const dir = join(SETS, 'd1', 'backup');
    const res = await verifySet(dir, { sequence: ['vda.nope.data', 'vda.full.data'] }, recordingLogger());
    expect(res.ok).toBe(1);
    expect(res.failed).toBe(1);
    expect(res.problems[0]!.file).toBe(join(dir, 'vda.nope.data'));
  });

  test('raw image files are not verifiable (INFO); .partial files are ignored', async () => {
    const dir = copySet('d1');
    writeFileSync(join(dir, 'vdb.full.data'), randomBytes(65536));
    writeFileSync(join(dir, 'vdb.inc.virtnbdbackup.1.data.partial'), 'garbage');
    const log = recordingLogger();
    const res = await verifySet(dir, {}, log);
    expect(res).toEqual({ ok: 10, failed: 0, skipped: 1, problems: [] });
    expect(log.at('INFO')).toContain(`[${join(dir, 'vdb.full.data')}] is a raw image: not verifiable (raw images have no checksum and no structure to check).`);
    expect(log.counts).toEqual({ warnings: 0, errors: 0 });
  });

  test('a damaged first header of a full file that has a .chksum is not mistaken for a raw image', async () => {
    const dir = copySet('d1');
    const victim = join(dir, 'vda.full.data');
    flipByte(victim, 0);
    const res = await verifySet(dir, { disk: 'vda' }, recordingLogger());
    expect(res.failed).toBe(1);
    expect(res.problems[0]).toMatchObject({ file: victim, offset: 0 });
  });

  test('input errors', async () => {
    const missing = join(tempDir(), 'nope');
    await expect(verifySet(missing, {}, recordingLogger())).rejects.toThrow(new RestoreInputError(`Backup source [${missing}] does not exist.`));
    const empty = tempDir();
    writeFileSync(join(empty, 'vmconfig.virtnbdbackup.0.xml'), '<domain/>');
    await expect(verifySet(empty, {}, recordingLogger())).rejects.toThrow(`No data files found in directory: [${empty}]`);
    await expect(verifySet(join(SETS, 'd1', 'backup'), { disk: 'vd' }, recordingLogger())).rejects.toThrow(/No data files for disk \[vd\]/);
  });
});
