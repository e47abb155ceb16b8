/** SavesetWriter: file handling and refusal of everything the format forbids. */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SavesetWriter, SavesetWriterError } from '../../../src/saveset/writer.js';
import { indexSaveset } from '../../../src/saveset/reader.js';
import { LZ4_CHUNK } from '../../../src/saveset/types.js';
import { meta, payloadOf, tempDir } from './helpers.js';

const t = tempDir();
afterAll(() => t.cleanup());
let n = 0;
const path = (): string => join(t.dir, `w${n++}.data`);

async function expectRefused(p: string, setup: (w: SavesetWriter) => Promise<void>, over = {}): Promise<void> {
  const w = await SavesetWriter.create(p, meta({ dataSize: 24, ...over }), { compress: false, fsync: false });
  await expect(setup(w)).rejects.toBeInstanceOf(SavesetWriterError);
  // a failed writer refuses further use, abort() removes the partial file
  await expect(w.zero(4000, 1)).rejects.toBeInstanceOf(SavesetWriterError);
  expect(existsSync(`${p}.partial`)).toBe(true);
  await w.abort();
  expect(existsSync(`${p}.partial`)).toBe(false);
  expect(existsSync(p)).toBe(false);
}

describe('SavesetWriter', () => {
  test('writes .partial, then the final file and its .chksum; nothing else remains', async () => {
    const p = path();
    const w = await SavesetWriter.create(p, meta({ dataSize: 24 }), { compress: false });
    expect(existsSync(`${p}.partial`)).toBe(true);
    expect(existsSync(p)).toBe(false);
    await w.data(0, Buffer.alloc(24, 1));
    const r = await w.finish();
    expect(r.path).toBe(p);
    expect(existsSync(`${p}.partial`)).toBe(false);
    expect(readdirSync(t.dir).filter((f) => f.startsWith(p.slice(t.dir.length + 1)))).toEqual([`w${n - 1}.data`, `w${n - 1}.data.chksum`]);
    expect(readFileSync(`${p}.chksum`, 'latin1')).toBe(String(r.checksum));
    expect(r.bytes).toBe(readFileSync(p).length);
    await w.abort(); // no-op after finish
    expect(existsSync(p)).toBe(true);
  });

  test('refuses existing targets and partials; never replaces a final file', async () => {
    const p = path();
    writeFileSync(p, 'precious');
    await expect(SavesetWriter.create(p, meta(), { compress: false })).rejects.toBeInstanceOf(SavesetWriterError);
    const q = path();
    writeFileSync(`${q}.chksum`, '1');
    await expect(SavesetWriter.create(q, meta(), { compress: false })).rejects.toBeInstanceOf(SavesetWriterError);
    const r = path();
    writeFileSync(`${r}.partial`, 'other writer');
    await expect(SavesetWriter.create(r, meta(), { compress: false })).rejects.toMatchObject({ code: 'EEXIST' });
    expect(readFileSync(`${r}.partial`, 'latin1')).toBe('other writer');
    // the final name appears while writing: finish fails, the other file stays
    const s = path();
    const w = await SavesetWriter.create(s, meta(), { compress: false, fsync: false });
    writeFileSync(s, 'raced');
    await expect(w.finish()).rejects.toBeInstanceOf(SavesetWriterError);
    expect(readFileSync(s, 'latin1')).toBe('raced');
    await w.abort();
    expect(existsSync(`${s}.partial`)).toBe(false);
  });

  test('metadata must agree with the options', async () => {
    const ps = [path(), path(), path(), path()];
    await expect(SavesetWriter.create(ps[0]!, meta({ compressed: 2 }), { compress: false })).rejects.toBeInstanceOf(SavesetWriterError);
    await expect(SavesetWriter.create(ps[1]!, meta(), { compress: 2 })).rejects.toBeInstanceOf(SavesetWriterError);
    await expect(SavesetWriter.create(ps[2]!, meta({ compressed: 2 }), { compress: 3 })).rejects.toBeInstanceOf(SavesetWriterError);
    await expect(SavesetWriter.create(ps[3]!, meta({ dataSize: 5000 }), { compress: false })).rejects.toBeInstanceOf(SavesetWriterError);
    for (const p of ps) expect(existsSync(`${p}.partial`) || existsSync(p)).toBe(false);
  });

  test('frame rules', async () => {
    await expectRefused(path(), (w) => w.zero(0, 0));
    await expectRefused(path(), (w) => w.zero(4000, 97)); // beyond virtualSize
    await expectRefused(path(), (w) => w.zero(-1, 2));
    await expectRefused(path(), (w) => w.zero(1.5, 2));
    await expectRefused(path(), async (w) => { await w.zero(100, 100); await w.zero(199, 1); }); // overlap
    await expectRefused(path(), async (w) => { await w.zero(100, 100); await w.zero(50, 1); }); // order
    await expectRefused(path(), async (w) => { await w.data(100, Buffer.alloc(8)); await w.data(107, Buffer.alloc(8)); });
    await expectRefused(path(), (w) => w.data(0, Buffer.alloc(25))); // more than dataSize
    await expectRefused(path(), async (w) => { await w.beginData(0, 24); await w.write(Buffer.alloc(25)); });
    await expectRefused(path(), async (w) => { await w.beginData(0, 24); await w.write(Buffer.alloc(23)); await w.endData(); });
    await expectRefused(path(), async (w) => { await w.beginData(0, 24); await w.zero(100, 1); });
    await expectRefused(path(), async (w) => { await w.beginData(0, 24); await w.finish(); });
    await expectRefused(path(), (w) => w.write(Buffer.alloc(1)));
    await expectRefused(path(), (w) => w.endData());
    await expectRefused(path(), async (w) => { await w.data(0, Buffer.alloc(16)); await w.finish(); }); // dataSize 24 ≠ 16
    // adjacent frames and a frame ending exactly at virtualSize are fine
    const p = path();
    const w = await SavesetWriter.create(p, meta({ dataSize: 24 }), { compress: false, fsync: false });
    await w.zero(0, 100);
    await w.data(100, Buffer.alloc(8, 7));
    await w.data(108, Buffer.alloc(16, 8));
    await w.zero(124, 4096 - 124);
    await w.finish();
    expect(indexSaveset(p).frames.map((f) => [f.kind, f.start, f.length])).toEqual([['zero', 0, 100], ['data', 100, 8], ['data', 108, 16], ['zero', 124, 3972]]);
  });

  test('compressed: chunking is independent of the write sizes', async () => {
    const len = LZ4_CHUNK + 1000;
    const img = Buffer.alloc(len);
    for (let i = 0; i < len; i++) img[i] = (i * 7919) >>> 5;
    const files: Buffer[] = [];
    for (const piece of [len, 1 << 20, 12345]) {
      const p = path();
      const w = await SavesetWriter.create(p, meta({ virtualSize: len, dataSize: len, compressed: 2 }), { compress: 2, fsync: false });
      await w.beginData(0, len);
      for (let off = 0; off < len; off += piece) await w.write(img.subarray(off, Math.min(len, off + piece)));
      await w.endData();
      await w.finish();
      const idx = indexSaveset(p);
      const f = idx.frames[0]!;
      expect(f.kind === 'data' && f.chunks!.map((c) => c.usize)).toEqual([LZ4_CHUNK, 1000]);
      expect(f.kind === 'data' && payloadOf(idx, f).equals(img)).toBe(true);
      files.push(readFileSync(p));
    }
    expect(files[1]!.equals(files[0]!)).toBe(true);
    expect(files[2]!.equals(files[0]!)).toBe(true);
  });
});
