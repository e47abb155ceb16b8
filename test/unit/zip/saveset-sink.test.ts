/**
 * A saveset written through SavesetWriter.createToSink() into a zip entry is, once unzipped,
 * byte for byte the file SavesetWriter.create() writes for the same calls, and its Adler-32 is
 * the content of the file's `.chksum` (FORMAT.md §5, §7).
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { SavesetWriter, SavesetWriterError } from '../../../src/saveset/writer.js';
import { indexSaveset } from '../../../src/saveset/reader.js';
import type { Metadata } from '../../../src/saveset/types.js';
import { ZipStreamWriter } from '../../../src/zip/writer.js';
import { prng } from '../../../src/devtools/prng.js';
import { parseZip, walkLocal } from './zip-layout.js';

const dir = mkdtempSync(join(tmpdir(), 'virtnbd-zipsink-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MiB = 1 << 20;

function meta(compressed: false | number, over: Partial<Metadata> = {}): Metadata {
  return {
    virtualSize: 16 * MiB,
    dataSize: 3 * MiB + 10 + 512,
    date: '2026-01-02T03:04:05.678901',
    diskName: 'sda',
    diskFormat: 'qcow2',
    checkpointName: 'virtnbdbackup.0',
    compressed,
    compressionMethod: 'lz4',
    parentCheckpoint: '',
    incremental: false,
    streamVersion: 2,
    ...over,
  };
}

/** Disk-like content: random runs and zero runs, so that LZ4 has something to do. */
function content(len: number, seed: number): Buffer {
  const r = prng(seed);
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i += 4096) {
    if (r() < 0.5) for (let j = i; j < Math.min(len, i + 4096); j++) b[j] = Math.floor(r() * 256);
  }
  return b;
}

/** The same calls for both writers: small writes (staged), large ones (direct), a reused buffer. */
async function fill(w: SavesetWriter): Promise<void> {
  await w.zero(0, 4096);
  const big = content(3 * MiB, 7);
  await w.beginData(4096, big.length);
  const piece = Buffer.alloc(200 * 1024);
  let off = 0;
  for (const len of [1000, 100, 200 * 1024, 65536, 7]) {
    big.copy(piece, 0, off, off + len);
    await w.write(piece.subarray(0, len));
    piece.fill(0xab);
    off += len;
  }
  await w.write(big.subarray(off));
  await w.endData();
  await w.zero(4096 + big.length, 4096);
  await w.data(8 * MiB, Buffer.from('0123456789'));
  await w.data(12 * MiB, content(512, 9));
}

describe.each([
  ['uncompressed', false],
  ['lz4 level 2', 2],
] as const)('saveset through a zip entry (%s)', (_label, compress) => {
  test('unzipped entry equals the file written by create(); the checksum matches its .chksum', async () => {
    const sub = mkdtempSync(join(dir, 'c'));
    const filePath = join(sub, 'sda.full.data');
    const fw = await SavesetWriter.create(filePath, meta(compress), { compress, fsync: false });
    await fill(fw);
    const fr = await fw.finish();

    const zipPath = join(sub, 'out.zip');
    const child = execa('sh', ['-c', 'cat > "$1"', 'sh', zipPath]);
    const z = new ZipStreamWriter(child.stdin!);
    const mtime = new Date();
    const entry = z.startEntry('sda.full.data', { zip64: true, mtime });
    const sw = await SavesetWriter.createToSink(entry, meta(compress), { compress, name: 'sda.full.data' });
    await fill(sw);
    const sr = await sw.finish();
    expect(entry.ended).toBe(true); // finish() ended the entry
    await z.addFile('sda.full.data.chksum', Buffer.from(String(sr.checksum)), mtime);
    await z.finish();
    await child;

    expect(sr).toEqual({ path: 'sda.full.data', bytes: fr.bytes, checksum: fr.checksum });
    const out = join(sub, 'x');
    await execa('unzip', ['-o', '-q', '-d', out, zipPath]);
    expect(readdirSync(out).sort()).toEqual(['sda.full.data', 'sda.full.data.chksum']);
    const fromZip = readFileSync(join(out, 'sda.full.data'));
    const fromFile = readFileSync(filePath);
    expect(fromZip.length).toBe(fr.bytes);
    expect(fromZip.equals(fromFile)).toBe(true);
    expect(readFileSync(join(out, 'sda.full.data.chksum'), 'latin1')).toBe(readFileSync(`${filePath}.chksum`, 'latin1'));
    // the unzipped file is a valid stream of the expected shape
    const idx = await indexSaveset(join(out, 'sda.full.data'));
    expect(idx.frames.filter((f) => f.kind === 'data').map((f) => [f.start, f.length])).toEqual([
      [4096, 3 * MiB],
      [8 * MiB, 10],
      [12 * MiB, 512],
    ]);
    // §7: the data entry is ZIP64 with a 24-byte descriptor, the checksum entry is not
    const archive = readFileSync(zipPath);
    const local = walkLocal(archive, parseZip(archive), (name) => name === 'sda.full.data');
    expect(local.map((l) => l.descriptor.length)).toEqual([24, 16]);
    // no file of the saveset was created next to the archive by the sink writer
    expect(existsSync(join(sub, 'sda.full.data.partial'))).toBe(false);
  });
});

describe('createToSink', () => {
  test('validates like create(), writes nothing on refusal, and refuses use after abort()', async () => {
    const writes: Buffer[] = [];
    let ended = false;
    const sink = {
      write: async (b: Buffer): Promise<void> => {
        writes.push(Buffer.from(b));
      },
      end: async (): Promise<void> => {
        ended = true;
      },
    };
    await expect(SavesetWriter.createToSink(sink, meta(2), { compress: false })).rejects.toBeInstanceOf(SavesetWriterError);
    await expect(SavesetWriter.createToSink(sink, meta(false, { dataSize: 17 * MiB }), { compress: false })).rejects.toBeInstanceOf(SavesetWriterError);
    expect(writes).toEqual([]);

    const w = await SavesetWriter.createToSink(sink, meta(false, { dataSize: 10 }), { compress: false });
    await w.data(0, Buffer.from('abcdefghij'));
    await expect(w.finish()).resolves.toMatchObject({ path: '' });
    expect(ended).toBe(true);
    const stream = Buffer.concat(writes);
    expect(stream.subarray(0, 5).toString('latin1')).toBe('meta ');
    expect(stream.subarray(-40).toString('latin1')).toBe(`stop ${'0'.repeat(16)} ${'0'.repeat(16)}\r\n`);

    const v = await SavesetWriter.createToSink(sink, meta(false, { dataSize: 10 }), { compress: false });
    await v.abort();
    await expect(v.data(0, Buffer.from('abcdefghij'))).rejects.toBeInstanceOf(SavesetWriterError);
  });

  test('a sink failure fails the writer', async () => {
    const sink = {
      write: async (): Promise<void> => {
        throw new Error('pipe gone');
      },
      end: async (): Promise<void> => undefined,
    };
    const w = await SavesetWriter.createToSink(sink, meta(false, { dataSize: 100 * 1024 }), { compress: false });
    await expect(w.data(0, Buffer.alloc(100 * 1024))).rejects.toThrow('pipe gone');
    await expect(w.finish()).rejects.toBeInstanceOf(SavesetWriterError);
  });
});
