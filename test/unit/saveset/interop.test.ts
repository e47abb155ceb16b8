/**
 * Compatibility with the original (virtnbdbackup 2.47, Debian package): its restore code reads our
 * files, and its stream reader sees the same frames as our indexer in its own files.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SavesetWriter } from '../../../src/saveset/writer.js';
import { indexSaveset } from '../../../src/saveset/reader.js';
import { LZ4_CHUNK } from '../../../src/saveset/types.js';
import { prng, randInt } from '../../../src/devtools/prng.js';
import { meta, tempDir } from './helpers.js';

const PY = '/usr/bin/python3';
const RESTORE = '/usr/bin/virtnbdrestore';
const available = existsSync(RESTORE) && existsSync('/usr/lib/python3/dist-packages/libvirtnbdbackup/sparsestream/streamer.py');

/** Runs the original's restoreData() against a fake NBD connection that writes into a plain file. */
const RESTORE_SCRIPT = `
import sys, json, contextlib, importlib.machinery, importlib.util
from argparse import Namespace
loader = importlib.machinery.SourceFileLoader('vrestore', ${JSON.stringify(RESTORE)})
spec = importlib.util.spec_from_loader('vrestore', loader)
m = importlib.util.module_from_spec(spec)
loader.exec_module(m)
from libvirtnbdbackup.sparsestream import streamer, types

class Nbd:
    def __init__(self, f): self.f = f
    def pwrite(self, data, offset):
        self.f.seek(offset)
        self.f.write(data)

class Conn:
    def __init__(self, f):
        self.nbd = Nbd(f)
        self.maxRequestSize = 33554432

data_file, target, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
stream = streamer.SparseStream(types)
with open(target, 'wb') as f:
    f.truncate(size)
    with contextlib.redirect_stdout(sys.stderr):
        ok = m.restoreData(Namespace(until=None, noprogress=True), stream, data_file, target, Conn(f))
meta = m.lib.dumpMetaData(data_file, stream)
trailer = None
if m.lib.isCompressed(meta):
    with open(data_file, 'rb') as r:
        trailer = stream.readCompressionTrailer(r)
print(json.dumps({'ok': ok, 'meta': meta, 'compressed': m.lib.isCompressed(meta), 'trailer': trailer}))
`;

/** Walks a stream with the original's SparseStream reader, like its restore does. */
const WALK_SCRIPT = `
import sys, json
from libvirtnbdbackup.sparsestream import streamer, types
t = types.SparseStreamTypes()
s = streamer.SparseStream(types)
out = []
for path in sys.argv[1:]:
    with open(path, 'rb') as r:
        kind, start, length = s.readFrame(r)
        meta = s.loadMetadata(r.read(length))
        assert r.read(2) == t.TERM
        compressed = meta.get('compressed', False) is not False and meta.get('streamVersion') == 2
        trailer = s.readCompressionTrailer(r) if compressed else None
        frames, k = [], 0
        while True:
            pos = r.tell()
            kind, start, length = s.readFrame(r)
            if kind == t.STOP:
                break
            frames.append([kind.decode(), start, length, pos])
            if kind == t.DATA:
                el = trailer[k] if trailer else length
                size = sum(list(el.values())[0]) if isinstance(el, dict) else el
                r.seek(size, 1)
                assert r.read(2) == t.TERM
                k += 1
        out.append({'meta': meta, 'frames': frames})
print(json.dumps(out))
`;

const maybe = available ? describe : describe.skip;

maybe('the original reads our files', () => {
  const t = tempDir();
  afterAll(() => t.cleanup());

  test.each([[false], [2]] as const)('restoreData() reconstructs the disk, compress=%p', async (compress) => {
    const r = prng(compress === false ? 11 : 12);
    const size = 40 * 1024 * 1024 + 4096;
    const img = Buffer.alloc(size);
    const layout: [kind: 'data' | 'zero', start: number, length: number][] = [
      ['data', 0, 65536], ['zero', 65536, 65536], ['data', 131072, 3], ['data', 131075, 1 << 20],
      ['data', 2 << 20, LZ4_CHUNK], // exactly 32 MiB: chunked path of the original, object trailer form
      ['data', (2 << 20) + LZ4_CHUNK + 512, 1234567], // after a gap
      ['zero', size - 4096, 4096],
    ];
    const words = new Uint32Array(img.buffer, img.byteOffset, size >>> 2);
    let x = ((r() * 2 ** 32) >>> 0) | 1;
    for (let i = 0; i < words.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      words[i] = i % 1024 < 512 ? x >>> 0 : 0x5a5a5a5a;
    }
    // only data extents hold data; the rest reads as zeros after a restore
    let end = 0;
    for (const [kind, start, length] of layout) {
      img.fill(0, end, start);
      if (kind === 'zero') img.fill(0, start, start + length);
      end = start + length;
    }
    img.fill(0, end);
    const dataSize = layout.filter((e) => e[0] === 'data').reduce((a, e) => a + e[2], 0);
    const p = join(t.dir, `vda.full.${compress}.data`);
    const w = await SavesetWriter.create(p, meta({ virtualSize: size, dataSize, compressed: compress, diskName: 'vda' }), { compress, fsync: false });
    for (const [kind, start, length] of layout) {
      if (kind === 'zero') await w.zero(start, length);
      else {
        await w.beginData(start, length);
        for (let off = 0; off < length;) {
          const n = Math.min(length - off, randInt(r, 1, 5 << 20));
          await w.write(img.subarray(start + off, start + off + n));
          off += n;
        }
        await w.endData();
      }
    }
    await w.finish();

    const target = join(t.dir, `restored.${compress}.img`);
    const out = JSON.parse(execFileSync(PY, ['-c', RESTORE_SCRIPT, p, target, String(size)], { maxBuffer: 1 << 26, stdio: ['ignore', 'pipe', 'pipe'] }).toString());
    expect(out.ok).toBe(true);
    expect(out.compressed).toBe(compress !== false);
    expect(out.meta).toEqual(indexSaveset(p).rawMetadata);
    if (compress) {
      expect(out.trailer.length).toBe(5);
      expect(out.trailer.map((e: unknown) => typeof e)).toEqual(['number', 'number', 'number', 'object', 'number']);
    }
    expect(readFileSync(target).equals(img)).toBe(true);
  }, 60000);
});

maybe("the original's reader and ours see the same frames in its files", () => {
  const sets = fileURLToPath(new URL('../../fixtures/upstream-sets/', import.meta.url));
  const files = ['d1', 'd2'].flatMap((s) => {
    const dir = join(sets, s, 'backup');
    return readdirSync(dir).filter((n) => n.endsWith('.data')).sort().map((n) => join(dir, n));
  });
  test('all fixture data files', () => {
    const py = JSON.parse(execFileSync(PY, ['-c', WALK_SCRIPT, ...files]).toString()) as { meta: unknown; frames: unknown[] }[];
    expect(py.length).toBe(files.length);
    files.forEach((f, i) => {
      const idx = indexSaveset(f);
      expect(idx.rawMetadata).toEqual(py[i]!.meta);
      expect(idx.frames.map((x) => [x.kind, x.start, x.length, x.headerOffset])).toEqual(py[i]!.frames);
    });
  });
});
