/**
 * The nbdkit plugin shim (plugin/virtnbd-plugin.c) and its Node worker (src/worker/worker.ts),
 * end to end: nbdkit serves the upstream fixture chains, nbdcopy/nbdinfo/libnbd read them back.
 * Builds nothing: `npm run build` must have produced the .so and dist/src/worker/worker.js.
 */
import { copyFileSync, mkdtempSync, readdirSync, rmSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { indexSaveset } from '../../src/saveset/reader.js';
import { resolveChain } from '../../src/chain/resolve.js';
import { ExtentKind, type ExtentMap, type MapExtent } from '../../src/chain/extent-map.js';
import { decodeTable, encodeTable, TableError } from '../../src/worker/table.js';
import { FrameCache } from '../../src/worker/frame-cache.js';
import { sha256sums } from '../helpers/upstream-sets.js';
import { flipByte } from '../helpers/saveset-edit.js';
import {
  PLUGIN, checkBuilt, copyAndHash as copyAndHashIn, nbdOps, serve as serveIn, stopAll, type PluginServer, type ServeOptions,
} from '../helpers/plugin-server.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SETS = join(ROOT, 'test', 'fixtures', 'upstream-sets');

let scratch = '';

beforeAll(() => {
  checkBuilt();
  scratch = mkdtempSync(join(tmpdir(), 'vnbd-plugin-test-'));
});

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

afterEach(stopAll);

const serve = (files: string[], opts: ServeOptions = {}): Promise<PluginServer> => serveIn(scratch, files, opts);
const copyAndHash = (uri: string, extraArgs: string[] = []): ReturnType<typeof copyAndHashIn> => copyAndHashIn(scratch, uri, extraArgs);

/** The files of each backup point (test/fixtures/upstream-sets/README.md). */
function pointFiles(set: string, disk: string): [string, string[]][] {
  const dir = join(SETS, set, 'backup');
  const diff = readdirSync(dir).find((n) => new RegExp(`^${disk}\\.diff\\.\\d+\\.data$`).test(n));
  if (!diff) throw new Error(`no diff file for ${disk} in ${dir}`);
  const p = (n: string) => join(dir, n);
  const full = p(`${disk}.full.data`);
  const inc = (i: number) => p(`${disk}.inc.virtnbdbackup.${i}.data`);
  return [
    ['0', [full]],
    ['1', [full, inc(1)]],
    ['2', [full, inc(1), inc(2)]],
    ['diff3', [full, inc(1), inc(2), p(diff)]],
    ['3', [full, inc(1), inc(2), inc(3)]],
  ];
}

const cases: [string, string, string, boolean, string[]][] = [];
for (const set of ['d1', 'd2']) {
  for (const disk of ['vda', 'sdb']) {
    for (const [point, files] of pointFiles(set, disk)) {
      for (const cow of [false, true]) cases.push([set, disk, point, cow, files]);
    }
  }
}

describe('whole exports match the reference SHA-256 of every backup point', () => {
  test.each(cases)('%s %s point %s (cow filter: %s)', async (set, disk, point, cow, files) => {
    const want = sha256sums(set).get(`${disk}.${point}.raw`);
    expect(want).toBeDefined();
    const srv = await serve(files, { cow });
    // Without the filter read every byte through pread (zero ranges too); with it, let nbdcopy
    // use extents as a client normally would.
    const got = await copyAndHash(srv.uri, cow ? [] : ['--no-extents']);
    expect(got.stderr).toBe('');
    expect(got.code).toBe(0);
    expect(got.sha).toBe(want);
  });
});

/** Adjacent extents of the same allocation merged: [offset, length, zero?]. */
function runs(items: { offset: number; length: number; zero: boolean }[]): [number, number, boolean][] {
  const out: [number, number, boolean][] = [];
  for (const it of items) {
    const last = out[out.length - 1];
    if (last && last[2] === it.zero && last[0] + last[1] === it.offset) last[1] += it.length;
    else out.push([it.offset, it.length, it.zero]);
  }
  return out;
}

function mapRuns(map: ExtentMap): [number, number, boolean][] {
  return runs(map.extents.map((e) => ({ offset: e.start, length: e.length, zero: e.kind === ExtentKind.Zero })));
}

describe('extents', () => {
  test.each([
    ['d1', 'sdb'],
    ['d1', 'vda'],
    ['d2', 'vda'],
    ['d2', 'sdb'],
  ])('nbdinfo --map of %s %s (newest point) reports holes exactly where the chain has zeros', async (set, disk) => {
    const files = pointFiles(set, disk).find(([p]) => p === '3')![1];
    const map = resolveChain(files.map((f) => indexSaveset(f)));
    const want = mapRuns(map);
    expect(want.some((r) => r[2])).toBe(true);
    expect(want.some((r) => !r[2])).toBe(true);
    const srv = await serve(files);
    const r = await execa('nbdinfo', ['--map', '--json', srv.uri]);
    const got = JSON.parse(r.stdout) as { offset: number; length: number; type: number }[];
    for (const g of got) expect([0, 3]).toContain(g.type);
    expect(runs(got.map((g) => ({ offset: g.offset, length: g.length, zero: g.type === 3 })))).toEqual(want);

    // NBD_CMD_FLAG_REQ_ONE: a single extent, of the right type, starting at the offset asked.
    const probes = want.slice(0, 4).map((w) => w[0] + 1);
    const res = await nbdOps(srv.uri, probes.map((o) => ['extents1', o, Math.min(map.size - o, 32 << 20)]));
    res.forEach((x, i) => {
      expect(x.ok).toBe(true);
      const e = (x as { entries: number[] }).entries;
      expect(e.length).toBe(2);
      const w = want.find((run) => run[0] <= probes[i] && probes[i] < run[0] + run[1])!;
      expect(e[1]).toBe(w[2] ? 3 : 0);
      expect(e[0]).toBeLessThanOrEqual(w[0] + w[1] - probes[i]);
    });
  });
});

describe('faults', () => {
  test('a raw file truncated after mapping: the read fails with EIO and a log line naming the file', async () => {
    const copy = join(scratch, 'trunc-vda.full.data');
    copyFileSync(join(SETS, 'd1', 'backup', 'vda.full.data'), copy);
    const map = resolveChain([indexSaveset(copy)]);
    const raw = map.extents.filter((e) => e.kind === ExtentKind.Raw);
    const last = raw[raw.length - 1];
    const srv = await serve([copy], { params: ['recheck=0'] }); // check the file on every read
    truncateSync(copy, last.fileOffset); // everything of the last raw extent is gone
    const [bad, zero] = await nbdOps(srv.uri, [
      ['pread', last.start, Math.min(last.length, 65536)],
      ['pread', map.extents.find((e) => e.kind === ExtentKind.Zero)!.start, 512],
    ]);
    expect(bad).toMatchObject({ ok: false, errno: 'EIO' });
    expect(zero.ok).toBe(true);
    // Last: nbdkit 1.32 may abort (raw_send_socket assertion, a server bug with -t > 1) when a
    // client drops the connection with requests in flight, as nbdcopy does after an error.
    const copied = await copyAndHash(srv.uri);
    expect(copied.code).not.toBe(0);
    expect(srv.stderr()).toMatch(new RegExp(`${copy.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: the file was truncated after it was mapped`));
  });

  test('a flipped byte in an LZ4 frame: that range fails with EIO, other ranges still read correctly', async () => {
    const orig = join(SETS, 'd2', 'backup', 'vda.full.data');
    const copy = join(scratch, 'flip-vda.full.data');
    copyFileSync(orig, copy);
    const map = resolveChain([indexSaveset(copy)]);
    const frames = new Map<number, MapExtent>();
    for (const e of map.extents) if (e.kind === ExtentKind.Lz4 && !frames.has(e.fileOffset)) frames.set(e.fileOffset, e);
    expect(frames.size).toBeGreaterThanOrEqual(2);
    const [victim, ...others] = [...frames.values()];
    const at = victim.fileOffset + Math.floor(victim.csize / 2);
    flipByte(copy, at);

    const good = await serve([orig]);
    const bad = await serve([copy]);
    const ops: [string, number, number][] = [
      ['pread', victim.start, Math.min(victim.length, 65536)],
      ...others.map((o): [string, number, number] => ['pread', o.start, Math.min(o.length, 65536)]),
      ['pread', 0, 1 << 20],
    ];
    const want = await nbdOps(good.uri, ops);
    const got = await nbdOps(bad.uri, ops);
    expect(want.every((w) => w.ok)).toBe(true);
    expect(got[0]).toMatchObject({ ok: false, errno: 'EIO' });
    const overlapsVictim = (o: [string, number, number]) => o[1] < victim.start + victim.length && victim.start < o[1] + o[2];
    ops.forEach((op, i) => {
      if (i > 0 && !overlapsVictim(op)) expect(got[i]).toEqual(want[i]);
    });
    expect(bad.stderr()).toContain(copy);
    expect(bad.stderr()).toContain(String(victim.fileOffset));
  });

  async function workerPids(nbdkitPid: number): Promise<number[]> {
    const r = await execa('ps', ['-o', 'pid=', '--ppid', String(nbdkitPid)], { reject: false });
    return String(r.stdout).split(/\s+/).filter(Boolean).map(Number);
  }

  test('lz4=worker: workers killed with SIGKILL are restarted: later requests succeed', async () => {
    const files = pointFiles('d2', 'vda').find(([p]) => p === '3')![1];
    const want = sha256sums('d2').get('vda.3.raw');
    const srv = await serve(files, { params: ['lz4=worker', 'workers=2'] });
    expect((await copyAndHash(srv.uri)).sha).toBe(want);
    const first = await workerPids(srv.pid);
    expect(first.length).toBe(2);
    for (const p of first) process.kill(p, 'SIGKILL');
    expect((await copyAndHash(srv.uri)).sha).toBe(want);

    // Killed in the middle of a copy: that copy may fail, the next one must succeed.
    // One request in flight: a failing nbdcopy with several would make nbdkit 1.32 abort (see above).
    const during = execa('nbdcopy', ['--no-extents', '--connections=1', '--requests=1', '--request-size=65536', srv.uri, join(scratch, 'during.raw')], { reject: false });
    await new Promise((r) => setTimeout(r, 30));
    for (const p of await workerPids(srv.pid)) process.kill(p, 'SIGKILL');
    await during;
    rmSync(join(scratch, 'during.raw'), { force: true });
    expect((await copyAndHash(srv.uri, ['--no-extents'])).sha).toBe(want);
    const now = await workerPids(srv.pid);
    expect(now.some((p) => !first.includes(p))).toBe(true);
    expect(srv.stderr()).not.toMatch(/virtnbd: bad table/);
  });

  test('lz4=worker: a stalled worker: the request fails after timeout=, the worker is replaced', async () => {
    const files = [join(SETS, 'd2', 'backup', 'vda.full.data')];
    const map = resolveChain(files.map((f) => indexSaveset(f)));
    const lz4 = map.extents.find((e) => e.kind === ExtentKind.Lz4)!;
    // timeout=5: long enough for a replacement worker (Node start + answer) on a loaded machine
    const srv = await serve(files, { params: ['lz4=worker', 'workers=1', 'timeout=5'] });
    const [stalled] = await workerPids(srv.pid);
    process.kill(stalled, 'SIGSTOP');
    const t0 = Date.now();
    const [r] = await nbdOps(srv.uri, [['pread', lz4.start, 4096]]);
    const took = Date.now() - t0;
    expect(r).toMatchObject({ ok: false, errno: 'EIO' });
    expect(took).toBeGreaterThanOrEqual(4500);
    expect(took).toBeLessThan(30_000);
    expect(srv.stderr()).toMatch(/timed out/);
    const [again] = await nbdOps(srv.uri, [['pread', lz4.start, 4096]]);
    expect(again.ok).toBe(true);
    expect(await workerPids(srv.pid)).not.toContain(stalled);
  });
});

describe('start-up', () => {
  test('a file that is not a saveset: nbdkit exits with an error naming it', async () => {
    const bogus = join(scratch, 'not-a-saveset.data');
    copyFileSync(join(SETS, 'README.md'), bogus);
    const r = await execa('nbdkit', ['-f', '-U', join(scratch, 'bogus.sock'), PLUGIN, `node=${process.execPath}`, `file=${bogus}`], {
      reject: false,
      timeout: 30_000,
    });
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain('cannot resolve the chain');
    expect(r.stderr).toContain(bogus);
  });

  test('hexdump=1 logs 16-byte lines and summarises zero runs', async () => {
    const files = [join(SETS, 'd1', 'backup', 'sdb.full.data')];
    const map = resolveChain(files.map((f) => indexSaveset(f)));
    const data = map.extents.find((e) => e.kind === ExtentKind.Raw)!;
    const zero = map.extents.find((e) => e.kind === ExtentKind.Zero && e.length >= 4096)!;
    const srv = await serve(files, { verbose: true, params: ['hexdump=1'] });
    const res = await nbdOps(srv.uri, [['pread', data.start, 32], ['pread', zero.start, 4096]]);
    expect(res.every((x) => x.ok)).toBe(true);
    const hex = (n: number) => n.toString(16).padStart(16, '0');
    expect(srv.stderr()).toMatch(new RegExp(`virtnbd: ${hex(data.start)}: ([0-9a-f]{2} ){16} \\|.{16}\\|`));
    expect(srv.stderr()).toContain(`virtnbd: ${hex(zero.start)}: * 4096 zero bytes`);
  });
});

describe('table encoding', () => {
  const files = pointFiles('d2', 'vda').find(([p]) => p === '3')![1];
  const map = resolveChain(files.map((f) => indexSaveset(f)));

  test('round trip', () => {
    expect(decodeTable(encodeTable(map))).toEqual({ size: map.size, files: [...map.files], extents: [...map.extents] });
  });

  test('decode rejects malformed tables', () => {
    const good = encodeTable(map);
    const recordsAt = good.length - map.extents.length * 48;
    const bad = (mutate: (b: Buffer) => void): Buffer => {
      const b = Buffer.from(good);
      mutate(b);
      return b;
    };
    expect(() => decodeTable(bad((b) => b.write('X', 0)))).toThrow(TableError);
    expect(() => decodeTable(good.subarray(0, good.length - 1))).toThrow(/bytes of records/);
    expect(() => decodeTable(bad((b) => b.writeUInt32LE(1, recordsAt)))).toThrow(/not contiguous/); // start of extent 0
    expect(() => decodeTable(bad((b) => b.writeUInt32LE(7, recordsAt + 32)))).toThrow(/bad kind/);
    expect(() => decodeTable(bad((b) => b.writeUInt32LE(99, recordsAt + 36)))).toThrow(/file index/);
    const lz4 = map.extents.findIndex((e) => e.kind === ExtentKind.Lz4);
    expect(() => decodeTable(bad((b) => b.writeUInt32LE(1, recordsAt + lz4 * 48 + 44)))).toThrow(/lz4/);
    expect(() => decodeTable(bad((b) => b.writeUInt32LE(map.size + 4096, 24)))).toThrow(/cover/); // size
  });

  test('encode refuses an inconsistent map', () => {
    const broken: ExtentMap = { ...map, extents: map.extents.slice(1) };
    expect(() => encodeTable(broken)).toThrow(TableError);
  });
});

describe('frame cache', () => {
  test('LRU bounded by bytes', () => {
    const c = new FrameCache(10);
    c.set(0, 0, Buffer.alloc(4));
    c.set(0, 100, Buffer.alloc(4));
    expect(c.get(0, 0)).toBeDefined(); // (0,0) is now the most recent
    c.set(1, 0, Buffer.alloc(4)); // 12 > 10: evicts (0,100)
    expect(c.get(0, 100)).toBeUndefined();
    expect(c.get(0, 0)).toBeDefined();
    expect(c.get(1, 0)).toBeDefined();
    expect(c.bytes).toBe(8);
    c.set(2, 0, Buffer.alloc(11)); // larger than the bound: not cached
    expect(c.get(2, 0)).toBeUndefined();
    expect(c.bytes).toBe(8);
  });
});
