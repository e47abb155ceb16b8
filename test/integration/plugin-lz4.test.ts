/**
 * LZ4 frames decoded in the plugin shim itself (plugin/vnbd-lz4.c, issue 13): frames larger than
 * the format's 32 MiB chunks, checksums (block, content) → EIO, the cache under pressure and in
 * parallel, files truncated or replaced while served → EIO, and no stale frame after a restart.
 * Data is compared by SHA-256 with a model of the disk.
 */
import { copyFileSync, mkdtempSync, readFileSync, renameSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { indexSaveset } from '../../src/saveset/reader.js';
import { resolveChain } from '../../src/chain/resolve.js';
import { ExtentKind, type MapExtent } from '../../src/chain/extent-map.js';
import { compressChunk } from '../../src/saveset/lz4.js';
import { prng } from '../../src/devtools/prng.js';
import { hdr, meta } from '../unit/saveset/helpers.js';
import { SETS, sha256sums } from '../helpers/upstream-sets.js';
import { flipByte } from '../helpers/saveset-edit.js';
import { checkBuilt, copyAndHash, nbdOps, serve, sha256, stopAll, type Op } from '../helpers/plugin-server.js';

const MiB = 1 << 20;
let scratch = '';

beforeAll(() => {
  checkBuilt();
  scratch = mkdtempSync(join(tmpdir(), 'vnbd-plugin-lz4-'));
});
afterEach(stopAll);
afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/** Compressible but not trivial data: runs of PRNG words and repeated 4 KiB patterns. */
function testData(length: number, seed: number): Buffer {
  const r = prng(seed);
  const b = Buffer.alloc(length);
  for (let at = 0; at < length; at += 65536) {
    const n = Math.min(65536, length - at);
    if (r() < 0.5) for (let i = 0; i + 4 <= n; i += 4) b.writeUInt32LE(Math.floor(r() * 2 ** 32), at + i);
    else for (let i = 0; i < n; i++) b[at + i] = (i * 7 + (i >> 12)) & 0xff;
  }
  return b;
}

/**
 * A compressed full (FORMAT.md §1–3) whose data extents are one LZ4 frame each, of any size
 * (our writer cuts 32 MiB chunks; other writers MUST be accepted with larger ones).
 */
function writeFramedFull(path: string, virtualSize: number, extents: { start: number; data: Buffer }[]): { model: Buffer; frames: { offset: number; csize: number }[] } {
  const model = Buffer.alloc(virtualSize);
  const dataSize = extents.reduce((n, e) => n + e.data.length, 0);
  const json = Buffer.from(JSON.stringify(meta({ virtualSize, dataSize, compressed: 2, diskName: 'vda' }), null, 4));
  const parts: Buffer[] = [Buffer.from(hdr('meta', 0, json.length)), json, Buffer.from('\r\n')];
  const frames: { offset: number; csize: number }[] = [];
  let pos = parts.reduce((n, p) => n + p.length, 0);
  let at = 0;
  const push = (b: Buffer): void => {
    parts.push(b);
    pos += b.length;
  };
  for (const e of extents) {
    if (e.start > at) push(Buffer.from(hdr('zero', at, e.start - at)));
    push(Buffer.from(hdr('data', e.start, e.data.length)));
    const f = compressChunk(e.data);
    frames.push({ offset: pos, csize: f.length });
    push(f);
    push(Buffer.from('\r\n'));
    e.data.copy(model, e.start);
    at = e.start + e.data.length;
  }
  if (at < virtualSize) push(Buffer.from(hdr('zero', at, virtualSize - at)));
  push(Buffer.from(hdr('stop', 0, 0)));
  const trailer = `[${frames.map((f) => f.csize).join(', ')}]`;
  push(Buffer.from(`${trailer}\r\n${hdr('comp', 0, trailer.length)}`));
  writeFileSync(path, Buffer.concat(parts));
  return { model, frames };
}

function lz4Frames(file: string): MapExtent[] {
  const map = resolveChain([indexSaveset(file)]);
  const frames = new Map<number, MapExtent>();
  for (const e of map.extents) if (e.kind === ExtentKind.Lz4 && !frames.has(e.fileOffset)) frames.set(e.fileOffset, e);
  return [...frames.values()];
}

describe('frames larger than 32 MiB', () => {
  test('a 40 MiB + 123 byte frame and a 1 MiB frame: whole export and slices equal the model', async () => {
    const dir = mkdtempSync(join(scratch, 'big-'));
    const file = join(dir, 'vda.full.data');
    const big = testData(40 * MiB + 123, 7);
    const { model } = writeFramedFull(file, 48 * MiB, [
      { start: 0, data: big },
      { start: 44 * MiB, data: testData(MiB, 8) },
    ]);
    const [f0] = lz4Frames(file);
    expect(f0.usize).toBe(40 * MiB + 123);
    // cache=16M: the big frame is larger than the cache, decoded for the requests waiting for it
    // and not kept (so only a few probes: every request into it decodes 40 MiB)
    for (const params of [[], ['cache=16M', 'decoders=1']]) {
      const srv = await serve(scratch, [file], { params });
      if (params.length === 0) {
        const got = await copyAndHash(scratch, srv.uri);
        expect(got.code).toBe(0);
        expect(got.sha).toBe(sha256(model));
      }
      const probes: Op[] = [['pread', 32 * MiB - 100, 200], ['pread', 40 * MiB - 4096, 8192], ['pread', 40 * MiB + 100, 4096 * 3], ['pread', 44 * MiB - 10, 20]];
      const res = await nbdOps(srv.uri, probes);
      res.forEach((r, i) => expect(r).toEqual({ ok: true, sha: sha256(model.subarray(probes[i][1], probes[i][1] + probes[i][2])) }));
      await srv.stop();
    }
  });
});

describe('checksums and damage: EIO, never wrong data', () => {
  const orig = join(SETS, 'd2', 'backup', 'vda.full.data');

  /** Serve a copy of orig damaged by `damage`; the victim frame's range must fail, the others read right. */
  async function damaged(name: string, damage: (copy: string, victim: MapExtent) => void, expectLog: RegExp): Promise<void> {
    const copy = join(mkdtempSync(join(scratch, `${name}-`)), 'vda.full.data');
    copyFileSync(orig, copy);
    const [victim, ...others] = lz4Frames(copy);
    expect(others.length).toBeGreaterThan(0);
    damage(copy, victim);
    const good = await serve(scratch, [orig]);
    const bad = await serve(scratch, [copy]);
    const ops: Op[] = [['pread', victim.start, Math.min(victim.length, 65536)], ...others.map((o): Op => ['pread', o.start, Math.min(o.length, 65536)])];
    const want = await nbdOps(good.uri, ops);
    // twice: a failed decode is not cached, the second request decodes again and fails again
    for (let k = 0; k < 2; k++) {
      const got = await nbdOps(bad.uri, ops);
      expect(got[0]).toMatchObject({ ok: false, errno: 'EIO' });
      for (let i = 1; i < ops.length; i++) expect(got[i]).toEqual(want[i]);
    }
    expect(bad.stderr()).toContain(copy);
    expect(bad.stderr()).toContain(`offset ${victim.fileOffset}`);
    expect(bad.stderr()).toMatch(expectLog);
  }

  test('a flipped byte in the compressed data of a block', async () => {
    // byte 40 of the frame: inside the first block's data (header 15 bytes + block size 4)
    await damaged('data', (f, v) => flipByte(f, v.fileOffset + 40), /corrupt LZ4 frame/);
  });

  test('a flipped byte in a block checksum', async () => {
    await damaged('blocksum', (f, v) => {
      const b = readFileSync(f).subarray(v.fileOffset, v.fileOffset + v.csize);
      expect(b[4] & 0x10).toBe(0x10); // FLG: block checksums on
      const size = b.readUInt32LE(15) & 0x7fffffff;
      flipByte(f, v.fileOffset + 15 + 4 + size); // the first block's checksum
    }, /blockChecksum_invalid/);
  });

  test('a flipped byte in the content checksum', async () => {
    await damaged('contentsum', (f, v) => {
      const b = readFileSync(f).subarray(v.fileOffset, v.fileOffset + v.csize);
      expect(b[4] & 0x04).toBe(0x04); // FLG: content checksum on
      flipByte(f, v.fileOffset + v.csize - 2);
    }, /contentChecksum_invalid/);
  });

});

describe('files changed while served', () => {
  const orig = join(SETS, 'd2', 'backup', 'vda.full.data');

  test('truncated: reads of the file fail with EIO, also for frames already in the cache', async () => {
    const copy = join(mkdtempSync(join(scratch, 'trunc-')), 'vda.full.data');
    copyFileSync(orig, copy);
    const [first, second] = lz4Frames(copy);
    const srv = await serve(scratch, [copy], { params: ['recheck=0'] }); // check on every read
    const ops: Op[] = [['pread', first.start, 4096], ['pread', second.start, 4096]];
    const before = await nbdOps(srv.uri, ops);
    expect(before.every((r) => r.ok)).toBe(true);
    truncateSync(copy, second.fileOffset + 10);
    const after = await nbdOps(srv.uri, ops);
    expect(after[0]).toMatchObject({ ok: false, errno: 'EIO' }); // cached, but the file is damaged
    expect(after[1]).toMatchObject({ ok: false, errno: 'EIO' });
    expect(srv.stderr()).toContain(`${copy}: the file was truncated after it was mapped`);
  });

  test('replaced (renamed over) or removed: EIO naming the file (default recheck=100 ms: within the interval)', async () => {
    const copy = join(mkdtempSync(join(scratch, 'repl-')), 'vda.full.data');
    copyFileSync(orig, copy);
    const [first] = lz4Frames(copy);
    const srv = await serve(scratch, [copy]);
    expect((await nbdOps(srv.uri, [['pread', first.start, 4096]]))[0].ok).toBe(true);
    copyFileSync(orig, `${copy}.new`);
    renameSync(`${copy}.new`, copy);
    const changedAt = Date.now();
    // a read within 100 ms of the last check may still be served (the data checked at start-up);
    // a read after the interval must fail (2 s: generous for a loaded machine), and every later one
    let r = await nbdOps(srv.uri, [['pread', first.start, 4096]]);
    while (r[0].ok && Date.now() - changedAt < 2000) r = await nbdOps(srv.uri, [['pread', first.start, 4096]]);
    expect(r[0]).toMatchObject({ ok: false, errno: 'EIO' });
    rmSync(copy);
    expect((await nbdOps(srv.uri, [['pread', first.start, 4096]]))[0]).toMatchObject({ ok: false, errno: 'EIO' });
    expect(srv.stderr()).toContain(`${copy}: the file was replaced or removed after it was mapped`);
  });

  test('restart on changed files at the same path: the new data, never a stale frame', async () => {
    const dir = mkdtempSync(join(scratch, 'restart-'));
    const file = join(dir, 'vda.full.data');
    // same layout (frame offsets and sizes may coincide), different contents
    const a = writeFramedFull(file, 8 * MiB, [{ start: MiB, data: testData(3 * MiB, 1) }]);
    let srv = await serve(scratch, [file]);
    expect((await copyAndHash(scratch, srv.uri)).sha).toBe(sha256(a.model));
    await srv.stop();
    const bData = testData(3 * MiB, 1);
    bData.write('changed', 2 * MiB);
    rmSync(file);
    const b = writeFramedFull(file, 8 * MiB, [{ start: MiB, data: bData }]);
    expect(sha256(b.model)).not.toBe(sha256(a.model));
    srv = await serve(scratch, [file]);
    expect((await copyAndHash(scratch, srv.uri)).sha).toBe(sha256(b.model));
  });
});

describe('the cache under pressure', () => {
  test.each([['cache=0'], ['cache=64K'], ['cache=1M']])('%s, 1–2 decoders, parallel requests: every point of d2 vda and sdb equals its reference', async (cache) => {
    const want = sha256sums('d2');
    for (const disk of ['vda', 'sdb']) {
      const dir = join(SETS, 'd2', 'backup');
      const files = [`${disk}.full.data`, `${disk}.inc.virtnbdbackup.1.data`, `${disk}.inc.virtnbdbackup.2.data`, `${disk}.inc.virtnbdbackup.3.data`].map((n) => join(dir, n));
      const srv = await serve(scratch, files, { params: [cache, `decoders=${disk === 'vda' ? 1 : 2}`] });
      const got = await copyAndHash(scratch, srv.uri, ['--request-size=65536', '--requests=16']);
      expect(got.stderr).toBe('');
      expect(got.sha).toBe(want.get(`${disk}.3.raw`));
      await srv.stop();
    }
  });
});
