/** The original's backup sets (test/fixtures/upstream-sets) through our reader. */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { adler32File, parseChecksumFile } from '../../../src/saveset/adler32.js';
import { indexSaveset, isSavesetFile } from '../../../src/saveset/reader.js';
import type { DataFrame } from '../../../src/saveset/types.js';
import { payloadOf } from './helpers.js';

const SETS = fileURLToPath(new URL('../../fixtures/upstream-sets/', import.meta.url));
const dataFiles = (set: string): string[] => {
  const dir = join(SETS, set, 'backup');
  return readdirSync(dir).filter((n) => n.endsWith('.data')).sort().map((n) => join(dir, n));
};
const d1 = dataFiles('d1');
const d2 = dataFiles('d2');

test('fixture sets are present', () => {
  expect(d1.length).toBe(10);
  expect(d2.length).toBe(10);
});

describe.each([['d1', d1], ['d2', d2]])('%s', (set, files) => {
  test.each(files.map((f) => [f.slice(f.lastIndexOf('/') + 1), f]))('%s: index, dataSize, checksum, tiling', async (name, file) => {
    const idx = indexSaveset(file);
    expect(isSavesetFile(file)).toBe(true);
    expect(idx.compressed).toBe(set === 'd2');
    expect(idx.metadata.diskName).toBe(name.split('.')[0]);
    const data = idx.frames.filter((f): f is DataFrame => f.kind === 'data');
    expect(data.reduce((a, f) => a + f.length, 0)).toBe(idx.metadata.dataSize);
    // the original writes no zero frames into incrementals; full files tile the disk exactly
    if (idx.metadata.incremental) expect(idx.frames.every((f) => f.kind === 'data')).toBe(true);
    if (name.includes('.full.')) {
      let end = 0;
      for (const f of idx.frames) {
        expect(f.start).toBe(end);
        end = f.start + f.length;
      }
      expect(end).toBe(idx.metadata.virtualSize);
    }
    const sum = parseChecksumFile(readFileSync(`${file}.chksum`, 'latin1'));
    expect(sum).toBeDefined();
    expect(await adler32File(file)).toBe(sum);
  });
});

test('d1 vda.full.data checksum is the documented 1731888446', async () => {
  expect(await adler32File(d1.find((f) => f.endsWith('/vda.full.data'))!)).toBe(1731888446);
});

test('d2: every LZ4 chunk of every frame decodes; totals equal dataSize', () => {
  for (const file of d2) {
    const idx = indexSaveset(file);
    let total = 0;
    for (const f of idx.frames) {
      if (f.kind !== 'data') continue;
      expect(f.chunks!.length).toBeGreaterThan(0);
      expect(f.payloadSize).toBe(f.chunks!.reduce((a, c) => a + c.csize, 0));
      const payload = payloadOf(idx, f); // decodeLz4Frame checks every chunk's size and checksums
      expect(payload.length).toBe(f.length);
      total += payload.length;
    }
    expect(total).toBe(idx.metadata.dataSize);
  }
});

test('d2 vda.full.data: trailer sizes as in FORMAT.md §3.3', () => {
  const idx = indexSaveset(d2.find((f) => f.endsWith('/vda.full.data'))!);
  const sizes = idx.frames.filter((f): f is DataFrame => f.kind === 'data').map((f) => f.payloadSize);
  expect(sizes).toEqual([4408, 262199, 298, 131111, 4408]);
});
