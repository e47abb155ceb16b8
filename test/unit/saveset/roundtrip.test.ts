/** SavesetWriter → indexSaveset → payloads, for random extent layouts. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SavesetWriter } from '../../../src/saveset/writer.js';
import { indexSaveset } from '../../../src/saveset/reader.js';
import { adler32File } from '../../../src/saveset/adler32.js';
import { LZ4_CHUNK, type DataFrame } from '../../../src/saveset/types.js';
import { prng, randInt } from '../../../src/devtools/prng.js';
import { meta, payloadOf, tempDir } from './helpers.js';

interface Extent {
  kind: 'data' | 'zero';
  start: number;
  length: number;
}

/** Disk content: random words (xorshift32 seeded from `r`) with repetitive runs, so LZ4 has something to do. */
function image(size: number, r: () => number): Buffer {
  const b = Buffer.alloc(size);
  const words = new Uint32Array(b.buffer, b.byteOffset, size >>> 2);
  let x = ((r() * 2 ** 32) >>> 0) | 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = (i >> 10) % 3 === 0 ? i >>> 6 : x >>> 0;
  }
  for (let i = words.length * 4; i < size; i++) b[i] = i & 0xff;
  return b;
}

/** Random ascending extents with gaps, odd sizes included. */
function layout(size: number, r: () => number, maxLen: number): Extent[] {
  const out: Extent[] = [];
  let pos = 0;
  while (pos < size) {
    const roll = r();
    const len = Math.min(size - pos, roll < 0.2 ? randInt(r, 1, 3) : randInt(r, 1, maxLen));
    if (roll < 0.15) {
      pos += len; // gap
      continue;
    }
    out.push({ kind: r() < 0.6 ? 'data' : 'zero', start: pos, length: len });
    pos += len;
  }
  return out;
}

async function writeSet(path: string, size: number, ext: Extent[], img: Buffer, compress: false | number, r: () => number): Promise<number> {
  const dataSize = ext.filter((e) => e.kind === 'data').reduce((a, e) => a + e.length, 0);
  const w = await SavesetWriter.create(path, meta({ virtualSize: size, dataSize, compressed: compress }), { compress, fsync: false });
  for (const e of ext) {
    if (e.kind === 'zero') {
      await w.zero(e.start, e.length);
      continue;
    }
    await w.beginData(e.start, e.length);
    let off = 0;
    while (off < e.length) {
      // pieces of any size: tiny, odd, across chunk boundaries
      const n = Math.min(e.length - off, r() < 0.3 ? randInt(r, 1, 100) : randInt(r, 1, 9 << 20));
      await w.write(img.subarray(e.start + off, e.start + off + n));
      off += n;
    }
    await w.endData();
  }
  return (await w.finish()).checksum;
}

async function check(path: string, ext: Extent[], img: Buffer, compressed: boolean, checksum: number): Promise<void> {
  const idx = indexSaveset(path);
  expect(idx.compressed).toBe(compressed);
  expect(idx.frames.map((f) => ({ kind: f.kind, start: f.start, length: f.length }))).toEqual(ext);
  for (const f of idx.frames) {
    if (f.kind !== 'data') continue;
    expect(payloadOf(idx, f).equals(img.subarray(f.start, f.start + f.length))).toBe(true);
  }
  expect(await adler32File(path)).toBe(checksum);
  expect(readFileSync(`${path}.chksum`, 'latin1')).toBe(String(checksum));
}

describe('round trip', () => {
  const t = tempDir();
  afterAll(() => t.cleanup());

  test.each([[1, false], [2, false], [3, 2], [4, 0], [5, 16]] as const)('small random layouts, seed %i, compress %p', async (seed, compress) => {
    const r = prng(seed);
    for (let i = 0; i < 8; i++) {
      const size = randInt(r, 1, 1 << 20);
      const img = image(size, r);
      const ext = layout(size, r, 200000);
      const p = join(t.dir, `s${seed}.${i}.data`);
      const sum = await writeSet(p, size, ext, img, compress, r);
      await check(p, ext, img, compress !== false, sum);
    }
  });

  test('empty streams: no frames at all, compressed trailer []', async () => {
    for (const compress of [false, 2] as const) {
      const p = join(t.dir, `empty.${compress}.data`);
      const sum = await writeSet(p, 4096, [], Buffer.alloc(0), compress, prng(1));
      await check(p, [], Buffer.alloc(0), compress !== false, sum);
      if (compress) expect(readFileSync(p, 'latin1')).toMatch(/stop 0{16} 0{16}\r\n\[\]\r\ncomp 0{16} 0{15}2\r\n$/);
    }
  });

  test('compressed, large extents: exactly 32 MiB and 64 MiB + a bit → object trailer form', async () => {
    const r = prng(99);
    const big = 2 * LZ4_CHUNK + 4097;
    const ext: Extent[] = [
      { kind: 'data', start: 0, length: 1000 },
      { kind: 'zero', start: 1000, length: 3096 },
      { kind: 'data', start: 4096, length: LZ4_CHUNK },
      { kind: 'data', start: 4096 + LZ4_CHUNK, length: LZ4_CHUNK - 1 },
      { kind: 'data', start: 4096 + 2 * LZ4_CHUNK + 512, length: big },
    ];
    const size = 4096 + 2 * LZ4_CHUNK + 512 + big + 7;
    const img = image(size, r);
    const p = join(t.dir, 'big.data');
    const sum = await writeSet(p, size, ext, img, 2, r);
    await check(p, ext, img, true, sum);

    const idx = indexSaveset(p);
    const data = idx.frames.filter((f): f is DataFrame => f.kind === 'data');
    expect(data.map((f) => f.chunks!.map((c) => c.usize))).toEqual([[1000], [LZ4_CHUNK], [LZ4_CHUNK - 1], [LZ4_CHUNK, LZ4_CHUNK, 4097]]);
    // the trailer's JSON forms, read from the file
    const f = readFileSync(p);
    const tlen = parseInt(f.subarray(f.length - 18, f.length - 2).toString('latin1'), 16);
    const trailer = f.subarray(f.length - 42 - tlen, f.length - 42).toString('latin1');
    const cs = data.map((d) => d.chunks!.map((c) => c.csize));
    const total = (a: number[]): number => a.reduce((x, y) => x + y, 0);
    expect(trailer).toBe(
      `[${cs[0]![0]}, {"${total(cs[1]!)}": [${cs[1]![0]}]}, ${cs[2]![0]}, {"${total(cs[3]!)}": [${cs[3]!.join(', ')}]}]`);
  }, 60000);
});
