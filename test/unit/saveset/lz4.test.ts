import { execFileSync } from 'node:child_process';
import { xxh32 } from '@node-rs/xxhash';
import { compressFrameSync } from 'lz4-napi';
import { compressChunk, compressChunkAsync, decodeLz4Frame, decodeLz4FrameUnsized, parseLz4FrameHeader } from '../../../src/saveset/lz4.js';
import { SavesetFormatError } from '../../../src/saveset/types.js';
import { prng } from '../../../src/devtools/prng.js';

/** The system Python, which has the lz4 module the original uses. */
const PY = '/usr/bin/python3';

function sample(n: number, seed = 1): Buffer {
  // half random, half repetitive: compresses, but not trivially
  const r = prng(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = i % 512 < 256 ? (r() * 256) | 0 : i & 0x0f;
  return b;
}

function rejects(fn: () => unknown): SavesetFormatError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SavesetFormatError);
    return e as SavesetFormatError;
  }
  throw new Error('accepted');
}

/** Frames written by Python's lz4 (liblz4), as the original does, with the given options. */
function pyFrames(data: Buffer, opts: string[]): Buffer[] {
  const script =
    'import lz4.frame as f, sys\n' +
    'd = sys.stdin.buffer.read()\n' +
    'for o in sys.argv[1:]:\n' +
    '    print(f.compress(d, **eval("dict(" + o + ")")).hex())\n';
  return execFileSync(PY, ['-c', script, ...opts], { input: data, maxBuffer: 1 << 28 })
    .toString()
    .trim()
    .split('\n')
    .map((h) => Buffer.from(h, 'hex'));
}

describe('compressChunk', () => {
  test('frame descriptor: content size, both checksums, correct HC', () => {
    for (const n of [1, 16, 65536, 65537, 300000]) {
      const data = sample(n, n);
      const f = compressChunk(data);
      expect(f.readUInt32LE(0)).toBe(0x184d2204);
      const flg = f[4]!;
      expect(flg & 0xc0).toBe(0x40);
      expect(flg & 0x08).toBe(0x08); // content size
      expect(flg & 0x10).toBe(0x10); // block checksums
      expect(flg & 0x04).toBe(0x04); // content checksum
      expect(flg & 0x03).toBe(0);
      // lz4_flex chooses the block size from the input size: 64 KiB up to 64 KiB, then larger
      expect(f[5]! & 0x8f).toBe(0);
      if (n <= 65536) expect(f[5]).toBe(0x40);
      expect(Number(f.readBigUInt64LE(6))).toBe(n);
      expect(f[14]).toBe((xxh32(f.subarray(4, 14), 0) >>> 8) & 0xff);
      expect(decodeLz4Frame(f, n, 'f', 0).equals(data)).toBe(true);
    }
  });
  test('async variant gives the same frame', async () => {
    const data = sample(200000, 3);
    expect((await compressChunkAsync(data)).equals(compressChunk(data))).toBe(true);
  });
  test("Python's lz4 (liblz4) decodes it and reports the content size", () => {
    const data = sample(150000, 9);
    const f = compressChunk(data);
    const out = execFileSync(PY, ['-c',
      'import lz4.frame as f, sys, hashlib\n' +
      'b = sys.stdin.buffer.read()\n' +
      'i = f.get_frame_info(b)\n' +
      'd = f.decompress(b)\n' +
      'print(i["content_size"], i["block_checksum"], i["content_checksum"], len(d), hashlib.sha256(d).hexdigest())'], { input: f }).toString().trim();
    const sha = execFileSync('python3', ['-c', 'import sys,hashlib; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'], { input: data }).toString().trim();
    expect(out).toBe(`150000 True True 150000 ${sha}`);
  });
});

describe('parseLz4FrameHeader', () => {
  const f = compressChunk(sample(1000));
  test('fields', () => {
    expect(parseLz4FrameHeader(f, 'f', 0)).toEqual({ headerSize: 15, contentSize: 1000, blockChecksum: true, contentChecksum: true, blockMaxSize: 65536 });
    const plain = compressFrameSync(sample(1000), {});
    const h = parseLz4FrameHeader(plain, 'f', 0);
    expect(h.headerSize).toBe(7);
    expect(h.contentSize).toBeUndefined();
  });
  test('rejections name the offset', () => {
    const mod = (i: number, v: number): Buffer => {
      const b = Buffer.from(f);
      b[i] = v;
      return b;
    };
    expect(rejects(() => parseLz4FrameHeader(f.subarray(0, 14), 'f', 100)).reason).toMatch(/truncated/);
    expect(rejects(() => parseLz4FrameHeader(Buffer.from('502a4d1800000000', 'hex'), 'f', 100)).reason).toMatch(/skippable/);
    expect(rejects(() => parseLz4FrameHeader(mod(0, 0x05), 'f', 100)).offset).toBe(100);
    expect(rejects(() => parseLz4FrameHeader(mod(4, f[4]! ^ 0x80), 'f', 100)).offset).toBe(104); // version
    expect(rejects(() => parseLz4FrameHeader(mod(4, f[4]! | 0x02), 'f', 100)).offset).toBe(104); // reserved
    expect(rejects(() => parseLz4FrameHeader(mod(5, 0x41), 'f', 100)).offset).toBe(105); // reserved BD
    expect(rejects(() => parseLz4FrameHeader(mod(5, 0x30), 'f', 100)).offset).toBe(105); // block size id 3
    expect(rejects(() => parseLz4FrameHeader(mod(14, f[14]! ^ 1), 'f', 100)).offset).toBe(114); // HC
    expect(rejects(() => parseLz4FrameHeader(mod(6, f[6]! ^ 1), 'f', 100)).offset).toBe(114); // size changed → HC
  });
});

describe('decodeLz4Frame', () => {
  const data = sample(200000, 5);
  const f = compressChunk(data);
  test('frames of other writers: liblz4 with any block size, with/without checksums and size, linked or not', () => {
    const frames = pyFrames(data, [
      'content_checksum=True, block_checksum=True, compression_level=2',
      'block_size=f.BLOCKSIZE_MAX4MB, store_size=False, content_checksum=False, block_checksum=False, block_linked=True',
      'block_size=f.BLOCKSIZE_MAX256KB, block_linked=False, compression_level=12',
      'block_size=f.BLOCKSIZE_MAX1MB, store_size=True',
    ]);
    for (const fr of frames) expect(decodeLz4Frame(fr, data.length, 'f', 0).equals(data)).toBe(true);
    expect(frames[0]![4]).toBe(0x5c); // as FORMAT.md §3.2: linked, the original's FLG
  });
  test('size mismatches', () => {
    expect(rejects(() => decodeLz4Frame(f, data.length - 1, 'f', 7)).offset).toBe(7);
    expect(rejects(() => decodeLz4Frame(f, data.length + 1, 'f', 7)).offset).toBe(7);
    const noSize = compressFrameSync(data, { contentChecksum: true, blockChecksums: true });
    rejects(() => decodeLz4Frame(noSize, data.length - 1, 'f', 0));
    rejects(() => decodeLz4Frame(noSize, data.length + 1, 'f', 0));
    expect(decodeLz4Frame(noSize, data.length, 'f', 0).equals(data)).toBe(true);
    // content-size field lies (HC recomputed)
    const lie = Buffer.from(f);
    lie.writeBigUInt64LE(BigInt(data.length + 1), 6);
    lie[14] = (xxh32(lie.subarray(4, 14), 0) >>> 8) & 0xff;
    rejects(() => decodeLz4Frame(lie, data.length + 1, 'f', 0));
    rejects(() => decodeLz4Frame(lie, data.length, 'f', 0));
  });
  test('trailing bytes, a second frame, truncation', () => {
    expect(rejects(() => decodeLz4Frame(Buffer.concat([f, Buffer.from([0])]), data.length, 'f', 10)).offset).toBe(10 + f.length);
    rejects(() => decodeLz4Frame(Buffer.concat([f, f]), data.length, 'f', 0));
    rejects(() => decodeLz4Frame(Buffer.concat([f, f]), data.length * 2, 'f', 0));
    for (const cut of [0, 5, 14, 15, 20, 1000, f.length - 5, f.length - 4, f.length - 1]) {
      rejects(() => decodeLz4Frame(f.subarray(0, cut), data.length, 'f', 0));
    }
  });
  test('every single-byte corruption is detected (checksums)', () => {
    const small = compressChunk(sample(3000, 11));
    for (let i = 0; i < small.length; i++) {
      const b = Buffer.from(small);
      b[i]! ^= 0x01 << (i % 8);
      rejects(() => decodeLz4Frame(b, 3000, 'f', 0));
    }
  });
  test('a frame that could decode far beyond the expected size is refused before decoding', () => {
    const zeros = compressChunk(Buffer.alloc(64 << 20));
    expect(rejects(() => decodeLz4FrameUnsized(zeros, 1 << 20, 'f', 0)).reason).toMatch(/exceeds the limit/);
    const noSize = compressFrameSync(Buffer.alloc(64 << 20), {});
    expect(rejects(() => decodeLz4Frame(noSize, 1000, 'f', 0)).reason).toMatch(/more than/);
    expect(rejects(() => decodeLz4FrameUnsized(noSize, 1 << 20, 'f', 0)).reason).toMatch(/more than/);
    expect(decodeLz4FrameUnsized(noSize, 64 << 20, 'f', 0).length).toBe(64 << 20);
  });
});

test('compression levels: ≥ 3 is LZ4-HC (smaller on text), every level decodes; frames as the original writes them (FLG 0x5C, BD 0x40)', async () => {
  const { compressChunk, compressChunkAsync, decodeLz4Frame } = await import('../../../src/saveset/lz4.js');
  const words = ['backup', 'checkpoint', 'extent', 'frame', 'virtual', 'machine', 'disk', 'bitmap'];
  let text = '';
  for (let i = 0; text.length < 600_000; i++) text += `${words[(i * 7) % 8]} ${words[(i * 3) % 5]} ${i % 97} `;
  const data = Buffer.from(text);
  const fast = compressChunk(data, 2);
  const hc = await compressChunkAsync(data, 9);
  expect(hc.length).toBeLessThan(fast.length);
  for (const f of [fast, hc, compressChunk(data, 0), compressChunk(data, 16)]) {
    expect([f[4], f[5]]).toEqual([0x5c, 0x40]);
    expect(decodeLz4Frame(f, data.length, 'mem', 0).equals(data)).toBe(true);
  }
});
