/** FORMAT.md §9: hostile and broken files must yield SavesetFormatError, never wrong frames or a crash. */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { compressFrameSync } from 'lz4-napi';
import { SavesetWriter } from '../../../src/saveset/writer.js';
import { indexSaveset, isSavesetFile } from '../../../src/saveset/reader.js';
import { compressChunk, parseLz4FrameHeader } from '../../../src/saveset/lz4.js';
import { SavesetFormatError, type SavesetIndex } from '../../../src/saveset/types.js';
import { hdr, meta, payloadOf, tempDir } from './helpers.js';

const t = tempDir();
afterAll(() => t.cleanup());
let n = 0;

function index(buf: Buffer): SavesetIndex {
  const p = join(t.dir, `case${n++ % 16}.data`);
  writeFileSync(p, buf);
  return indexSaveset(p);
}

function fails(buf: Buffer): SavesetFormatError {
  let idx: SavesetIndex;
  try {
    idx = index(buf);
  } catch (e) {
    if (!(e instanceof SavesetFormatError)) throw new Error(`not a SavesetFormatError: ${(e as Error).stack}`);
    return e;
  }
  throw new Error(`accepted: ${JSON.stringify(idx.frames)}`);
}

const frameShape = (i: SavesetIndex) => i.frames.map((f) => JSON.stringify(f));

/** Everything a successful index promises (FORMAT.md §9), checked independently. */
function checkInvariants(i: SavesetIndex): void {
  let end = 0;
  let sum = 0;
  let pos = 0;
  for (const f of i.frames) {
    expect(f.length).toBeGreaterThan(0);
    expect(f.start).toBeGreaterThanOrEqual(end);
    expect(f.start + f.length).toBeLessThanOrEqual(i.metadata.virtualSize);
    expect(f.headerOffset).toBeGreaterThanOrEqual(pos);
    end = f.start + f.length;
    pos = f.headerOffset + 40;
    if (f.kind === 'data') {
      sum += f.length;
      expect(f.payloadOffset).toBe(f.headerOffset + 40);
      expect(f.payloadOffset + f.payloadSize + 2).toBeLessThanOrEqual(i.fileSize);
      if (i.compressed) {
        expect(f.chunks!.reduce((a, c) => a + c.usize, 0)).toBe(f.length);
        expect(f.chunks!.reduce((a, c) => a + c.csize, 0)).toBe(f.payloadSize);
      } else {
        expect(f.chunks).toBeUndefined();
        expect(f.payloadSize).toBe(f.length);
      }
      pos = f.payloadOffset + f.payloadSize + 2;
    }
  }
  expect(sum).toBe(i.metadata.dataSize);
}

const rawMeta = (o: Record<string, unknown> = {}): string =>
  JSON.stringify({ ...meta({ virtualSize: 4096, dataSize: 24 }), ...o }, null, 4);

/** An uncompressed stream from its parts; the meta header is computed. */
function stream(json: string, ...parts: (string | Buffer)[]): Buffer {
  const j = Buffer.from(json);
  return Buffer.concat([Buffer.from(hdr('meta', 0, j.length)), j, Buffer.from('\r\n'), ...parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : p))]);
}

/** A compressed stream: parts up to and including stop, then trailer, CRLF, comp header. */
function zstream(json: string, trailer: string, ...parts: (string | Buffer)[]): Buffer {
  return Buffer.concat([stream(json, ...parts), Buffer.from(`${trailer}\r\n${hdr('comp', 0, Buffer.byteLength(trailer))}`, 'latin1')]);
}

const STOP = hdr('stop', 0, 0);
const A16 = Buffer.from('0123456789abcdef');
const L16 = compressChunk(A16);
const L10 = [0, 1, 2].map((k) => compressChunk(Buffer.alloc(10, 0x41 + k)));
const zMeta = rawMeta({ compressed: 2, dataSize: 46 });
/** Compressed base: one single-chunk frame, one frame of 3 chunks (object form), zero frames. */
const zParts = (): (string | Buffer)[] => [
  hdr('data', 0, 16), L16, '\r\n',
  hdr('zero', 16, 0x7f0),
  hdr('data', 0x800, 30), ...L10, '\r\n',
  hdr('zero', 0x81e, 0x7e2),
  STOP,
];
const zTotal = L10.reduce((a, f) => a + f.length, 0);
const zTrailer = `[${L16.length}, {"${zTotal}": [${L10.map((f) => f.length).join(', ')}]}]`;
const zBase = zstream(zMeta, zTrailer, ...zParts());

let uBase: Buffer;
beforeAll(async () => {
  const p = join(t.dir, 'toy.data');
  const w = await SavesetWriter.create(p, meta({ dataSize: 24 }), { compress: false, fsync: false });
  await w.data(0, A16);
  await w.zero(0x10, 0x7f0);
  await w.data(0x800, Buffer.from('ABCDEFGH'));
  await w.zero(0x808, 0x7f8);
  await w.finish();
  uBase = readFileSync(p);
});

describe('the base files are valid', () => {
  test('uncompressed and compressed', () => {
    const u = index(uBase);
    expect(u.frames.length).toBe(4);
    const z = index(zBase);
    expect(z.frames.map((f) => [f.kind, f.start, f.length])).toEqual([['data', 0, 16], ['zero', 16, 0x7f0], ['data', 0x800, 30], ['zero', 0x81e, 0x7e2]]);
    const d = z.frames[2]!;
    expect(d.kind === 'data' && d.chunks!.map((c) => c.usize)).toEqual([10, 10, 10]);
    expect(d.kind === 'data' && payloadOf(z, d).toString()).toBe('AAAAAAAAAABBBBBBBBBBCCCCCCCCCC');
  });
});

describe.each([['uncompressed', () => uBase], ['compressed', () => zBase]])('%s: mutations', (_name, base) => {
  test('truncation at every length fails', () => {
    const b = base();
    for (let len = 0; len < b.length; len++) fails(b.subarray(0, len));
  });

  test('appended bytes fail', () => {
    for (const extra of ['\0', '\r\n', STOP, 'x'.repeat(100)]) fails(Buffer.concat([base(), Buffer.from(extra, 'latin1')]));
  });

  test('bit 7 flipped anywhere: outside payloads an error, inside payloads same frames (LZ4: decode error)', () => {
    const b = base();
    const good = index(b);
    const payload = new Set<number>(); // payload bytes the indexer must not read
    const lz4Body = new Map<number, [number, number]>(); // byte → [frame index, chunk index]
    good.frames.forEach((f, fi) => {
      if (f.kind !== 'data') return;
      if (!f.chunks) for (let i = f.payloadOffset; i < f.payloadOffset + f.length; i++) payload.add(i);
      else f.chunks.forEach((c, ci) => {
        const hs = parseLz4FrameHeader(b.subarray(c.offset, c.offset + 19), 'x', c.offset).headerSize;
        for (let i = c.offset + hs; i < c.offset + c.csize; i++) {
          payload.add(i);
          lz4Body.set(i, [fi, ci]);
        }
      });
    });
    expect(payload.size).toBeGreaterThan(20);
    for (let i = 0; i < b.length; i++) {
      const m = Buffer.from(b);
      m[i]! ^= 0x80;
      if (!payload.has(i)) {
        fails(m);
        continue;
      }
      const idx = index(m);
      expect(frameShape(idx)).toEqual(frameShape(good));
      const where = lz4Body.get(i);
      if (where) {
        const f = idx.frames[where[0]]!;
        expect(() => f.kind === 'data' && payloadOf(idx, f)).toThrow(SavesetFormatError);
      }
    }
  });

  test('every other single-bit flip: a SavesetFormatError or an index that keeps every promise', () => {
    const b = base();
    let rejected = 0;
    for (let i = 0; i < b.length; i++) {
      for (const bit of [0, 1, 3, 5]) {
        const m = Buffer.from(b);
        m[i]! ^= 1 << bit;
        let idx: SavesetIndex;
        try {
          idx = index(m);
        } catch (e) {
          expect(e).toBeInstanceOf(SavesetFormatError);
          rejected++;
          continue;
        }
        checkInvariants(idx);
      }
    }
    expect(rejected).toBeGreaterThan(b.length);
  });
});

describe('specific defects (offset of the offending bytes)', () => {
  const j = rawMeta();
  const jl = 40 + Buffer.byteLength(j) + 2; // first frame header offset
  const valid = (...parts: string[]) => stream(j, ...parts);

  test('hand-made valid stream, upper-case hex accepted', () => {
    const ok = index(valid(hdr('data', 0, 16), '0123456789abcdef\r\n', hdr('data', 0x800, 8), 'ABCDEFGH\r\n', STOP));
    const up = index(valid(hdr('data', 0, 16).toUpperCase().replace('DATA', 'data'), '0123456789abcdef\r\n',
      'data 0000000000000800 0000000000000008\r\n'.replace('800', '800'), 'ABCDEFGH\r\n', STOP));
    expect(frameShape(up)).toEqual(frameShape(ok));
    const up2 = index(valid('zero 00000000000000AB 00000000000000CD\r\n', 'data 00000000000008AA 0000000000000018\r\n', 'ABCDEFGH0123456789abcdef\r\n', STOP));
    expect(up2.frames.map((f) => [f.kind, f.start, f.length])).toEqual([['zero', 0xab, 0xcd], ['data', 0x8aa, 24]]);
    fails(valid(hdr('data', 0, 16), '0123456789abcdef\r\n', STOP)); // dataSize 24 ≠ 16
  });

  test('unknown kind, meta/comp in the middle', () => {
    expect(fails(valid('hole 0000000000000000 0000000000000010\r\n', hdr('data', 0x800, 24), 'x'.repeat(24), '\r\n', STOP)).offset).toBe(jl);
    expect(fails(valid(hdr('meta', 0, 0), STOP)).offset).toBe(jl);
    expect(fails(valid(hdr('comp', 0, 0), STOP)).offset).toBe(jl);
  });

  test('frame rules: overlap, order, range, zero length', () => {
    const d24 = [hdr('data', 0x100, 24), 'y'.repeat(24), '\r\n'];
    expect(fails(valid(hdr('zero', 0, 0x200), ...d24, STOP)).offset).toBe(jl + 40); // overlap
    expect(fails(valid(...d24, hdr('zero', 0x10, 0x10), STOP)).offset).toBe(jl + 66); // unsorted
    expect(fails(valid(...d24, hdr('zero', 0x117, 0x10), STOP)).offset).toBe(jl + 66); // overlaps by one byte
    index(valid(...d24, hdr('zero', 0x118, 0x10), STOP)); // adjacent is fine
    expect(fails(valid(...d24, hdr('zero', 0x1000, 1), STOP)).offset).toBe(jl + 66); // start+length > virtualSize
    expect(fails(valid(...d24, hdr('zero', 0xff0, 0x11), STOP)).offset).toBe(jl + 66);
    index(valid(...d24, hdr('zero', 0xff0, 0x10), STOP)); // ends exactly at virtualSize
    expect(fails(valid(...d24, hdr('zero', 0x200, 0), STOP)).offset).toBe(jl + 66); // length 0
    expect(fails(valid(hdr('zero', 0x1fffffffffffff, 0x10), ...d24, STOP)).offset).toBe(jl);
    expect(fails(valid(hdr('data', 0xff0, 24), 'y'.repeat(24), '\r\n', STOP)).offset).toBe(jl);
  });

  test('terminators, stop rules, garbage, truncation', () => {
    const d = (term: string) => [hdr('data', 0, 24), 'z'.repeat(24), term];
    expect(fails(valid(...d('\n\n'), STOP)).offset).toBe(jl + 64);
    expect(fails(valid(...d(''), STOP)).offset).toBe(jl); // payload + CRLF would run into the stop header
    expect(fails(valid(...d('\r'), hdr('zero', 0x100, 1), STOP)).offset).toBe(jl + 64);
    expect(fails(valid(...d('\r\n'), hdr('stop', 0, 1))).offset).toBe(jl + 66);
    expect(fails(valid(...d('\r\n'), hdr('stop', 1, 0))).offset).toBe(jl + 66);
    expect(fails(valid(...d('\r\n'), STOP, 'garbage')).offset).toBe(jl + 66); // the stop that is not last
    expect(fails(valid(...d('\r\n'), STOP, STOP)).offset).toBe(jl + 66);
    fails(valid(...d('\r\n'))); // no stop
    fails(valid(hdr('data', 0, 24), 'z'.repeat(10))); // payload beyond the end
    expect(fails(Buffer.from(j)).offset).toBe(0); // no meta header
    expect(fails(Buffer.concat([Buffer.from(STOP), valid(...d('\r\n'), STOP)])).offset).toBe(0);
    expect(fails(valid(...d('\r\n'), STOP).subarray(0, 39)).offset).toBe(0);
  });

  test('metadata: length limits, CRLF, JSON, dataSize', () => {
    fails(Buffer.from(hdr('meta', 0, 0x100001) + ' '.repeat(64)));
    // a real metadata JSON padded to just above 1 MiB is refused although it is in the file
    const big = j.replace('{', '{' + ' '.repeat(0x100001 - Buffer.byteLength(j)));
    expect(Buffer.byteLength(big)).toBe(0x100001);
    expect(fails(stream(big, hdr('data', 0, 24), 'z'.repeat(24), '\r\n', STOP)).offset).toBe(22);
    const exact = j.replace('{', '{' + ' '.repeat(0x100000 - Buffer.byteLength(j)));
    index(stream(exact, hdr('data', 0, 24), 'z'.repeat(24), '\r\n', STOP));
    expect(fails(Buffer.from(hdr('meta', 0, 1000) + j)).offset).toBe(22); // longer than the file
    const noCrlf = Buffer.concat([Buffer.from(hdr('meta', 0, Buffer.byteLength(j)) + j + '\n\n' + STOP)]);
    expect(fails(noCrlf).offset).toBe(40 + Buffer.byteLength(j));
    expect(fails(stream(rawMeta({ dataSize: 25 }), hdr('data', 0, 24), 'z'.repeat(24), '\r\n', STOP)).offset).toBe(40);
    expect(fails(stream('[]', STOP)).offset).toBe(40);
    expect(fails(stream('{', STOP)).offset).toBe(40);
    expect(fails(stream(rawMeta({ virtualSize: '4096' }), STOP)).offset).toBe(40);
    expect(fails(Buffer.from(hdr('meta', 1, 2) + '{}\r\n' + STOP)).offset).toBe(0); // meta start ≠ 0
  });

  test('isSavesetFile', () => {
    const p = join(t.dir, 'probe');
    const is = (b: Buffer | string): boolean => {
      writeFileSync(p, b);
      return isSavesetFile(p);
    };
    expect(is(valid(hdr('data', 0, 24), 'z'.repeat(24), '\r\n', STOP))).toBe(true);
    expect(is(Buffer.from(hdr('meta', 0, 2) + '{}\r\n'))).toBe(false); // no virtualSize
    expect(is('meta 0000000000000000 0000000000000010' + '\0'.repeat(100))).toBe(false);
    expect(is(Buffer.alloc(1 << 16))).toBe(false);
    expect(is('')).toBe(false);
  });
});

describe('compressed: trailer and LZ4 defects', () => {
  const trailerAt = zBase.length - 42 - Buffer.byteLength(zTrailer);
  const z = (trailer: string, json = zMeta, parts = zParts()) => zstream(json, trailer, ...parts);

  test('trailer elements and counts', () => {
    const [a, b, c] = L10.map((f) => f.length);
    const s = L16.length;
    expect(fails(z(`[${s}]`)).offset).toBeGreaterThan(0); // too few
    expect(fails(z(`[${s}, {"${zTotal}": [${a}, ${b}, ${c}]}, 5]`)).offset).toBe(trailerAt); // too many
    expect(fails(z(`[${s}, {"${zTotal + 1}": [${a}, ${b}, ${c}]}]`)).offset).toBe(trailerAt); // key ≠ sum
    fails(z(`[${s}, {"${zTotal}": [${a + b}, ${c}]}]`)); // sizes disagree with the LZ4 frames
    fails(z(`[${s}, {"${zTotal}": [${a}, ${b}, ${c}], "x": [1]}]`)); // two members
    fails(z(`[${s}, {"${zTotal}": []}]`));
    fails(z(`[${s}, {"0${zTotal}": [${a}, ${b}, ${c}]}]`)); // key not canonical
    fails(z(`[${s}, ${zTotal}]`)); // integer for a 3-frame payload: the LZ4 frame ends early
    fails(z(`[${s}.0, {"${zTotal}": [${a}, ${b}, ${c}]}]`.replace(`${s}.0`, `${s}.5`)));
    fails(z(`[0, {"${zTotal}": [${a}, ${b}, ${c}]}]`));
    fails(z(`[-${s}, {"${zTotal}": [${a}, ${b}, ${c}]}]`));
    fails(z(`["${s}", {"${zTotal}": [${a}, ${b}, ${c}]}]`));
    fails(z(`[${s}, [${a}, ${b}, ${c}]]`));
    fails(z(`{"0": ${s}}`));
    fails(z(`[${s}, {"${zTotal}": [${a}, ${b}, ${c}]}`)); // not JSON
    fails(z(''));
    // an object for a single-frame payload is fine, as is an integer for a multi-frame one if it matches
    index(z(`[{"${s}": [${s}]}, {"${zTotal}": [${a}, ${b}, ${c}]}]`));
  });

  test('comp header and trailer location', () => {
    const noComp = zBase.subarray(0, zBase.length - 40);
    expect(fails(noComp).offset).toBe(noComp.length - 40);
    const bad = Buffer.from(zBase);
    bad.write('comp 0000000000000001', bad.length - 40, 'latin1');
    expect(fails(bad).offset).toBe(bad.length - 40);
    const long = Buffer.from(zBase);
    long.write('0000000000ffffff', long.length - 18, 'latin1');
    expect(fails(long).offset).toBe(long.length - 18);
    const huge = Buffer.from(zBase);
    huge.write('0000000004000001', huge.length - 18, 'latin1'); // > 64 MiB
    expect(fails(huge).offset).toBe(huge.length - 18);
    const noCrlf = Buffer.from(zBase);
    noCrlf.write('\n\n', noCrlf.length - 42, 'latin1');
    expect(fails(noCrlf).offset).toBe(noCrlf.length - 42);
    // the original's lenient reading (seek to S-42) must not be copied: a trailer without CRLF
    const lenient = Buffer.concat([stream(zMeta, ...zParts()), Buffer.from(zTrailer + hdr('comp', 0, Buffer.byteLength(zTrailer)))]);
    fails(lenient);
    // a stream marked uncompressed with a trailer: garbage after stop
    fails(zstream(rawMeta({ dataSize: 46 }), zTrailer, ...zParts()));
    // compressed metadata with an uncompressed layout
    fails(stream(zMeta, ...zParts()));
  });

  test('LZ4 frames: skippable, bad header, chunk sizes, missing content size', () => {
    const skip = Buffer.from('502a4d18' + '07000000' + '00'.repeat(7), 'hex'); // 15 bytes, skippable frame
    const parts = [hdr('data', 0, 16), skip, '\r\n', STOP];
    expect(fails(zstream(rawMeta({ compressed: 2, dataSize: 16 }), `[${skip.length}]`, ...parts)).offset).toBe(jlz());
    // chunk content sizes do not add up to the frame length
    const p2 = zParts();
    p2[4] = hdr('data', 0x800, 31);
    p2[9] = hdr('zero', 0x81f, 0x7e1);
    fails(zstream(rawMeta({ compressed: 2, dataSize: 47 }), zTrailer, ...p2));
    // no content-size field: a single frame takes the data frame's length; several are decoded to learn their sizes
    const n16 = compressFrameSync(A16, { contentChecksum: true, blockChecksums: true });
    const n10 = [0, 1, 2].map((k) => compressFrameSync(Buffer.alloc(10, 0x41 + k), {}));
    const p3 = zParts();
    p3[1] = n16;
    p3.splice(5, 3, ...n10);
    const tot = n10.reduce((a, f) => a + f.length, 0);
    const idx = index(zstream(zMeta, `[${n16.length}, {"${tot}": [${n10.map((f) => f.length).join(', ')}]}]`, ...p3));
    const [d0, , d1] = idx.frames;
    expect(d0!.kind === 'data' && payloadOf(idx, d0).equals(A16)).toBe(true);
    expect(d1!.kind === 'data' && d1.chunks!.map((c) => c.usize)).toEqual([10, 10, 10]);
    expect(d1!.kind === 'data' && payloadOf(idx, d1).toString()).toBe('AAAAAAAAAABBBBBBBBBBCCCCCCCCCC');
    // …and a corrupt one among them is found while indexing
    const bad = Buffer.from(n10[1]!);
    bad[bad.length - 1]! ^= 1;
    p3.splice(5, 3, n10[0]!, bad, n10[2]!);
    fails(zstream(zMeta, `[${n16.length}, {"${tot}": [${n10.map((f) => f.length).join(', ')}]}]`, ...p3));
  });

  /** Payload offset of the first data frame of a compressed stream with dataSize 16. */
  const jlz = () => 40 + Buffer.byteLength(rawMeta({ compressed: 2, dataSize: 16 })) + 2 + 40;
});
