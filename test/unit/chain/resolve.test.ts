import { resolveChain } from '../../../src/chain/resolve.js';
import { ExtentKind, findExtent, type ExtentMap } from '../../../src/chain/extent-map.js';
import type { SavesetIndex, ExtentFrame, Metadata } from '../../../src/saveset/types.js';
import { prng, randInt } from '../../../src/devtools/prng.js';

/** A synthetic file: its frames plus the bytes its raw payloads / decoded LZ4 chunks hold. */
interface FakeFile {
  index: SavesetIndex;
  bytes: Uint8Array; // raw: addressed by payload offsets; lz4: by chunk offsets (decoded content)
}

function meta(virtualSize: number, incremental: boolean): Metadata {
  return {
    virtualSize, dataSize: 0, date: '2026-01-01T00:00:00', diskName: 'vda', diskFormat: 'qcow2',
    checkpointName: 'virtnbdbackup.0', compressed: false, compressionMethod: 'lz4', parentCheckpoint: '',
    incremental, streamVersion: 2,
  };
}

/** Random non-overlapping frames inside [0, size); base files tile the disk completely. */
function fakeFile(r: () => number, size: number, base: boolean, compressed: boolean, id: number): FakeFile {
  const frames: ExtentFrame[] = [];
  const payload: number[] = [];
  let at = base ? 0 : randInt(r, 0, 64);
  while (at < size) {
    const len = Math.min(size - at, randInt(r, 1, 300));
    const kind = r() < 0.35 ? 'zero' : 'data';
    if (kind === 'zero') frames.push({ kind, start: at, length: len, headerOffset: 0 });
    else {
      const payloadOffset = payload.length;
      for (let i = 0; i < len; i++) payload.push(randInt(r, 1, 255));
      if (compressed) {
        const chunks = [];
        let c = 0;
        while (c < len) {
          const u = Math.min(len - c, randInt(r, 1, 120));
          chunks.push({ offset: payloadOffset + c, csize: 7, usize: u });
          c += u;
        }
        frames.push({ kind, start: at, length: len, headerOffset: 0, payloadOffset: 0, payloadSize: 0, chunks });
      } else frames.push({ kind, start: at, length: len, headerOffset: 0, payloadOffset, payloadSize: len });
    }
    at += len;
    if (!base) at += randInt(r, 0, 200); // gaps: older data shows through
  }
  return {
    index: { path: `/f${id}`, fileSize: 0, metadata: meta(size, !base), rawMetadata: {}, compressed, frames },
    bytes: Uint8Array.from(payload),
  };
}

/** The disk as the original's restore semantics + ours (zero frames override) define it. */
function model(files: FakeFile[]): Uint8Array {
  const size = files[files.length - 1].index.metadata.virtualSize;
  let disk = new Uint8Array(0);
  for (const f of files) {
    const vs = f.index.metadata.virtualSize;
    const next = new Uint8Array(vs);
    next.set(disk.subarray(0, Math.min(vs, disk.length)));
    disk = next;
    for (const fr of f.index.frames) {
      if (fr.kind === 'zero') disk.fill(0, fr.start, fr.start + fr.length);
      else if (fr.chunks) {
        let at = fr.start;
        for (const c of fr.chunks) {
          disk.set(f.bytes.subarray(c.offset, c.offset + c.usize), at);
          at += c.usize;
        }
      } else disk.set(f.bytes.subarray(fr.payloadOffset, fr.payloadOffset + fr.length), fr.start);
    }
  }
  return disk.subarray(0, size);
}

/** Read the whole disk through the map, as the plugin would. */
function readThroughMap(map: ExtentMap, files: FakeFile[]): Uint8Array {
  const out = new Uint8Array(map.size);
  let expect = 0;
  for (const e of map.extents) {
    expect === e.start || fail(`gap/overlap at ${expect}`);
    expect = e.start + e.length;
    if (e.kind === ExtentKind.Raw) out.set(files[e.file].bytes.subarray(e.fileOffset, e.fileOffset + e.length), e.start);
    else if (e.kind === ExtentKind.Lz4) {
      e.sliceOffset + e.length <= e.usize || fail('slice beyond chunk');
      out.set(files[e.file].bytes.subarray(e.fileOffset + e.sliceOffset, e.fileOffset + e.sliceOffset + e.length), e.start);
    }
  }
  expect === map.size || fail(`map ends at ${expect}, size ${map.size}`);
  return out;
}

function fail(msg: string): never {
  throw new Error(msg);
}

describe('resolveChain', () => {
  test.each([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])('random chain seed %i equals the model', (seed) => {
    const r = prng(seed);
    const size = randInt(r, 500, 5000);
    const compressed = seed % 2 === 0;
    const files = [fakeFile(r, size, true, compressed, 0)];
    const n = randInt(r, 1, 30);
    for (let i = 1; i <= n; i++) files.push(fakeFile(r, size, false, compressed, i));
    const map = resolveChain(files.map((f) => f.index));
    expect(Buffer.from(readThroughMap(map, files)).equals(Buffer.from(model(files)))).toBe(true);
    // no two neighbouring zero extents
    for (let i = 1; i < map.extents.length; i++)
      expect(map.extents[i].kind === ExtentKind.Zero && map.extents[i - 1].kind === ExtentKind.Zero).toBe(false);
  });

  test('zero frame in an incremental hides older data', () => {
    const base = fakeFile(prng(1), 100, true, false, 0);
    base.index.frames = [{ kind: 'data', start: 0, length: 100, headerOffset: 0, payloadOffset: 0, payloadSize: 100 }];
    base.bytes = new Uint8Array(100).fill(7);
    const inc: FakeFile = { index: { ...base.index, path: '/f1', frames: [{ kind: 'zero', start: 10, length: 20, headerOffset: 0 }] }, bytes: new Uint8Array(0) };
    const map = resolveChain([base.index, inc.index]);
    const disk = readThroughMap(map, [base, inc]);
    expect([...disk.subarray(0, 10)].every((b) => b === 7)).toBe(true);
    expect([...disk.subarray(10, 30)].every((b) => b === 0)).toBe(true);
    expect([...disk.subarray(30)].every((b) => b === 7)).toBe(true);
  });

  test('shrink then grow never resurrects old data; size is the newest virtualSize', () => {
    const r = prng(99);
    const a = fakeFile(r, 1000, true, false, 0);
    const b = fakeFile(r, 400, false, false, 1);
    b.index.metadata = meta(400, true);
    const c: FakeFile = { index: { ...b.index, path: '/f2', metadata: meta(900, true), frames: [] }, bytes: new Uint8Array(0) };
    const files = [a, b, c];
    const map = resolveChain(files.map((f) => f.index));
    expect(map.size).toBe(900);
    const disk = readThroughMap(map, files);
    expect([...disk.subarray(400)].every((x) => x === 0)).toBe(true);
    expect(Buffer.from(disk).equals(Buffer.from(model(files)))).toBe(true);
  });

  test('findExtent is a correct binary search', () => {
    const r = prng(5);
    const files = [fakeFile(r, 3000, true, false, 0), fakeFile(r, 3000, false, false, 1)];
    const map = resolveChain(files.map((f) => f.index));
    for (let off = 0; off < map.size; off += 7) {
      const e = map.extents[findExtent(map, off)];
      expect(e.start <= off && off < e.start + e.length).toBe(true);
    }
    expect(findExtent(map, -1)).toBe(-1);
    expect(findExtent(map, map.size)).toBe(-1);
  });
});
