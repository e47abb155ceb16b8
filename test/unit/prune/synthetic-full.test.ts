/**
 * writeSyntheticFull: the resolved map of a chain (written by our writer from raw images, with a
 * > 32 MiB extent and rewrites that cut LZ4 frames) becomes one full whose content is the newest
 * image; whole LZ4 frames are copied verbatim, the rest compressed again; the stream passes the
 * reader's checks. Also the writer's writeLz4Frame() contract.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeImageChain } from '../../../src/devtools/image-chain.js';
import { chainFromDir, resolveSelected } from '../../../src/chain/index.js';
import { ExtentKind } from '../../../src/chain/extent-map.js';
import { indexSaveset } from '../../../src/saveset/reader.js';
import { SavesetWriter, SavesetWriterError } from '../../../src/saveset/writer.js';
import { compressChunk } from '../../../src/saveset/lz4.js';
import { LZ4_CHUNK, type Metadata } from '../../../src/saveset/types.js';
import { writeSyntheticFull } from '../../../src/prune/synthetic-full.js';
import { resolvedSha } from '../../helpers/resolved-sha.js';

const MiB = 1024 * 1024;
const SIZE = 40 * MiB;
let dir: string;
beforeAll(() => void (dir = mkdtempSync(join(tmpdir(), 'prune-synth-'))));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test.each([false, 2] as const)('compress %s: the synthetic full equals the newest image', async (compress) => {
  const work = mkdtempSync(join(dir, 'w-'));
  const img = Buffer.alloc(SIZE);
  for (let o = 1 * MiB; o < 1 * MiB + LZ4_CHUNK + 300_000; o++) img[o] = (o * 7 + (o >> 12)) & 0xff; // one run > 32 MiB
  for (let o = 36 * MiB; o < 37 * MiB; o++) img[o] = o & 0xfe;
  const points = [];
  writeFileSync(join(work, 'p0.raw'), img);
  points.push({ image: join(work, 'p0.raw'), level: 'full' as const });
  img.fill(0x5a, 2 * MiB, 2 * MiB + 4096); // cuts the first (32 MiB) LZ4 chunk
  img.fill(0, 36 * MiB + 8192, 36 * MiB + 16384); // zeroed range
  img.fill(0x33, 39 * MiB, 39 * MiB + 512); // data in a hole
  writeFileSync(join(work, 'p1.raw'), img);
  points.push({ image: join(work, 'p1.raw'), level: 'inc' as const });
  const set = join(work, 'set');
  mkdirSync(set);
  await writeImageChain(set, 'vda', points, compress);
  const { map } = resolveSelected(chainFromDir(set, { disk: 'vda' }));
  const out = join(work, 'vda.full.data');
  const meta = { date: '2026-01-01T00:00:00', diskName: 'vda', diskFormat: 'qcow2', checkpointName: 'virtnbdbackup.1', compressed: compress, compressionMethod: 'lz4', parentCheckpoint: '', incremental: false, streamVersion: 2 } as Omit<Metadata, 'dataSize' | 'virtualSize'>;
  const r = await writeSyntheticFull(map, meta, out);
  const idx = indexSaveset(out);
  expect(idx.metadata).toMatchObject({ checkpointName: 'virtnbdbackup.1', incremental: false, virtualSize: SIZE, dataSize: r.dataBytes });
  // frames tile the disk
  let at = 0;
  for (const f of idx.frames) {
    expect(f.start).toBe(at);
    at = f.start + f.length;
  }
  expect(at).toBe(SIZE);
  const alone = join(work, 'alone');
  mkdirSync(alone);
  await writeSyntheticFull(map, meta, join(alone, 'vda.full.data'));
  expect(resolvedSha(alone, 'vda')).toBe(sha(readFileSync(join(work, 'p1.raw'))));
  if (compress !== false) {
    // the untouched 1 MiB extent at 36 MiB was cut by the zeroed range: compressed again; the
    // surviving whole source frames (e.g. the 300 KB tail of the long run) are copied verbatim
    const src = indexSaveset(join(set, 'vda.full.data'));
    const srcFrames = new Set(src.frames.flatMap((f) => (f.kind === 'data' ? f.chunks!.map((c) => readFileSync(join(set, 'vda.full.data')).subarray(c.offset, c.offset + c.csize).toString('base64')) : [])));
    const outBuf = readFileSync(join(alone, 'vda.full.data'));
    const copied = indexSaveset(join(alone, 'vda.full.data')).frames.flatMap((f) => (f.kind === 'data' ? f.chunks! : [])).filter((c) => srcFrames.has(outBuf.subarray(c.offset, c.offset + c.csize).toString('base64')));
    expect(copied.length).toBeGreaterThan(0);
    expect(map.extents.some((e) => e.kind === ExtentKind.Lz4 && e.sliceOffset > 0)).toBe(true);
  }
});

test('writeLz4Frame: only whole chunks at a chunk boundary of a compressed stream', async () => {
  const chunks: Buffer[] = [];
  const sink = { write: async (b: Buffer) => void chunks.push(Buffer.from(b)), end: async () => undefined };
  const meta: Metadata = { virtualSize: 8192, dataSize: 8192, date: '', diskName: 'vda', diskFormat: 'qcow2', checkpointName: 'virtnbdbackup.0', compressed: 2, compressionMethod: 'lz4', parentCheckpoint: '', incremental: false, streamVersion: 2 };
  const w = await SavesetWriter.createToSink(sink, meta, { compress: 2 });
  await w.beginData(0, 4096);
  await expect(w.writeLz4Frame(compressChunk(Buffer.alloc(100, 1)), 100)).rejects.toThrow(SavesetWriterError);
  const w2 = await SavesetWriter.createToSink(sink, meta, { compress: 2 });
  await w2.beginData(0, 4096);
  await w2.writeLz4Frame(compressChunk(Buffer.alloc(4096, 1)), 4096);
  await w2.endData();
  await w2.beginData(4096, 4096);
  await w2.write(Buffer.alloc(4096, 2));
  await w2.endData();
  await w2.finish();
  const plain = await SavesetWriter.createToSink(sink, { ...meta, compressed: false }, { compress: false });
  await plain.beginData(0, 10);
  await expect(plain.writeLz4Frame(compressChunk(Buffer.alloc(10)), 10)).rejects.toThrow(/uncompressed/);
});
