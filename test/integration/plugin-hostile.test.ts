/**
 * The shim (plugin/virtnbd-plugin.c, plugin/vnbd-table.c) against a hostile worker
 * (test/helpers/plugin-bad-worker.mjs, passed as `worker=`): every check of the table parser and
 * of the worker protocol is exercised at least once and refused — nbdkit does not start (with a
 * message naming the problem) or the request fails with EIO. Also: the worker reads the very
 * files the shim opened (inherited descriptors, --fds=4).
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { indexSaveset } from '../../src/saveset/reader.js';
import { resolveChain } from '../../src/chain/resolve.js';
import { ExtentKind, type ExtentMap } from '../../src/chain/extent-map.js';
import { encodeTable } from '../../src/worker/table.js';
import { SETS } from '../helpers/upstream-sets.js';
import { checkBuilt, nbdOps, serve, serveFails, stopAll } from '../helpers/plugin-server.js';

const BAD = fileURLToPath(new URL('../helpers/plugin-bad-worker.mjs', import.meta.url));
const MiB = 1 << 20;
let scratch = '';
let lz4File = '';
let rawFile = '';
let lz4Map: ExtentMap;
let rawMap: ExtentMap;

/** A directory under scratch whose path makes the table's file list need padding (36 + len(path) not a multiple of 8). */
function paddedDir(tag: string): string {
  for (let extra = 0; ; extra++) {
    const dir = join(scratch, `${tag}${'x'.repeat(extra)}`);
    if ((36 + Buffer.byteLength(join(dir, 'vda.full.data'))) % 8 !== 0) {
      mkdirSync(dir);
      return dir;
    }
  }
}

beforeAll(() => {
  checkBuilt();
  scratch = mkdtempSync(join(tmpdir(), 'vnbd-plugin-hostile-'));
  lz4File = join(paddedDir('lz4'), 'vda.full.data');
  copyFileSync(join(SETS, 'd2', 'backup', 'vda.full.data'), lz4File);
  rawFile = join(paddedDir('raw'), 'vda.full.data');
  copyFileSync(join(SETS, 'd1', 'backup', 'vda.full.data'), rawFile);
  lz4Map = resolveChain([indexSaveset(lz4File)]);
  rawMap = resolveChain([indexSaveset(rawFile)]);
});
afterEach(stopAll);
afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

let nTables = 0;
function tableFile(t: Buffer): string {
  const p = join(scratch, `table-${nTables++}.bin`);
  writeFileSync(p, t);
  return p;
}

const w64 = (b: Buffer, off: number, v: number): void => void b.writeBigUInt64LE(BigInt(v), off);

/** The valid table of `map`, changed by `mutate(buf, recordOffset(i))`. */
function mutated(map: ExtentMap, mutate: (b: Buffer, rec: (i: number) => number) => Buffer | void): Buffer {
  const b = Buffer.from(encodeTable(map));
  const recordsAt = b.length - map.extents.length * 48;
  return mutate(b, (i) => recordsAt + i * 48) ?? b;
}

const idx = (map: ExtentMap, kind: ExtentKind): number => {
  const i = map.extents.findIndex((e) => e.kind === kind);
  expect(i).toBeGreaterThanOrEqual(0);
  return i;
};

type Case = [string, () => { file: string; table: Buffer }, RegExp];
const lz4 = (m: (b: Buffer, rec: (i: number) => number) => Buffer | void) => () => ({ file: lz4File, table: mutated(lz4Map, m) });
const raw = (m: (b: Buffer, rec: (i: number) => number) => Buffer | void) => () => ({ file: rawFile, table: mutated(rawMap, m) });
const pathLen = () => Buffer.byteLength(lz4File);

const tableCases: Case[] = [
  ['shorter than the header', lz4((b) => b.subarray(0, 20)), /bad table: 20 bytes, shorter than its header/],
  ['bad magic', lz4((b) => void b.write('X', 0)), /bad table: bad magic/],
  ['unsupported version', lz4((b) => void b.writeUInt32LE(2, 8)), /unsupported version 2/],
  ['file count differs', lz4((b) => void b.writeUInt32LE(2, 12)), /bad table: 2 files, expected 1/],
  ['too many extents', lz4((b) => w64(b, 16, 64 * MiB + 1)), /extents, more than the limit/],
  ['size beyond 2^63', lz4((b) => void b.writeUInt32LE(0x80000000, 28)), /size \d+ too large/],
  ['file list cut before a length', lz4((b) => b.subarray(0, 34)), /truncated file list/],
  ['path length over 64 KiB', lz4((b) => void b.writeUInt32LE(70000, 32)), /file 0: path of 70000 bytes/],
  ['file list cut inside a path', lz4((b) => b.subarray(0, 36 + 5)), /truncated file list/],
  ['path differs from file=', lz4((b) => void (b[36 + pathLen() - 1] ^= 1)), /file 0 is not .*vda\.full\.data/],
  ['non-zero padding', lz4((b) => void (b[36 + pathLen()] = 1)), /bad padding/],
  ['records not a multiple of 48 bytes', lz4((b) => b.subarray(0, b.length - 1)), /bytes of records for/],
  ['extent 0 not at 0', lz4((b, rec) => w64(b, rec(0), 1)), /extent 0 at 1: not contiguous/],
  ['length 0', lz4((b, rec) => w64(b, rec(0) + 8, 0)), /extent 0 at 0: bad length/],
  ['kind 7', lz4((b, rec) => void b.writeUInt32LE(7, rec(0) + 32)), /bad kind/],
  ['zero extent with a file offset', lz4((b, rec) => w64(b, rec(idx(lz4Map, ExtentKind.Zero)) + 16, 4096)), /zero extent with a file position/],
  ['file index out of range', lz4((b, rec) => void b.writeUInt32LE(5, rec(idx(lz4Map, ExtentKind.Lz4)) + 36)), /bad file index/],
  ['lz4 csize 0', lz4((b, rec) => void b.writeUInt32LE(0, rec(idx(lz4Map, ExtentKind.Lz4)) + 40)), /lz4 frame of size 0/],
  ['lz4 usize over 256 MiB', lz4((b, rec) => void b.writeUInt32LE(256 * MiB + 1, rec(idx(lz4Map, ExtentKind.Lz4)) + 44)), /decodes to more than 256 MiB/],
  ['lz4 csize over twice usize', lz4((b, rec) => {
    const r = rec(idx(lz4Map, ExtentKind.Lz4));
    b.writeUInt32LE(2 * b.readUInt32LE(r + 44) + 65537, r + 40);
  }), /larger than twice its decoded size/],
  ['lz4 slice past the frame', lz4((b, rec) => {
    const r = rec(idx(lz4Map, ExtentKind.Lz4));
    w64(b, r + 24, b.readUInt32LE(r + 44));
  }), /lz4 slice beyond the decoded frame/],
  ['lz4 frame past the end of the file', lz4((b, rec) => w64(b, rec(idx(lz4Map, ExtentKind.Lz4)) + 16, statSync(lz4File).size - 10)), /lz4 frame beyond the end of its file/],
  ['extents do not cover the size', lz4((b) => w64(b, 24, lz4Map.size + 4096)), /extents cover \d+ of \d+ bytes/],
  ['raw extent with lz4 fields', raw((b, rec) => void b.writeUInt32LE(5, rec(idx(rawMap, ExtentKind.Raw)) + 40)), /raw extent with lz4 fields/],
  ['raw extent past the end of the file', raw((b, rec) => w64(b, rec(idx(rawMap, ExtentKind.Raw)) + 16, statSync(rawFile).size - 1)), /raw extent beyond the end of its file/],
];

describe('table checks: nbdkit refuses to start, naming the problem', () => {
  test.each(tableCases)('%s', async (_name, make, message) => {
    const { file, table } = make();
    const r = await serveFails(scratch, [file], [`worker=${BAD}`], { VNBD_BAD_MODE: 'table', VNBD_BAD_TABLE: tableFile(table) });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toMatch(/virtnbd: bad table|virtnbd: .*from the worker/);
  });

  test('the unchanged table is accepted (the cases above fail for their change only)', async () => {
    for (const [file, map] of [[lz4File, lz4Map], [rawFile, rawMap]] as const) {
      const srv = await serve(scratch, [file], { params: [`worker=${BAD}`], env: { VNBD_BAD_MODE: 'table', VNBD_BAD_TABLE: tableFile(encodeTable(map)) } });
      const [r] = await nbdOps(srv.uri, [['pread', 0, 65536]]);
      expect(r.ok).toBe(true);
      await srv.stop();
    }
  });
});

describe('start-up protocol', () => {
  test.each([
    ['an error answer', 'status', [], /cannot resolve the chain: hostile worker says no/],
    ['an error message over 64 KiB', 'bigmsg', [], /error message has 100000 bytes/],
    ['a table cut short', 'short', [], /no extent table from the worker .*: the worker exited/],
    ['a worker that exits without a word', 'exit', [], /no extent table from the worker .*: the worker exited/],
    ['a worker that never answers (timeout=2)', 'hang', ['timeout=2'], /no extent table from the worker .*: timed out/],
  ])('%s', async (_name, mode, params, message) => {
    const r = await serveFails(scratch, [lz4File], [`worker=${BAD}`, ...params], { VNBD_BAD_MODE: mode });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(message);
    if (mode === 'hang') expect(r.ms).toBeLessThan(30_000);
  });
});

describe('a table that passes the checks but lies about a frame: EIO at the read', () => {
  /** A frame of the chain and all its extents' indexes. */
  function frameExtents(map: ExtentMap): number[][] {
    const byFrame = new Map<string, number[]>();
    map.extents.forEach((e, i) => {
      if (e.kind !== ExtentKind.Lz4) return;
      const k = `${e.file}:${e.fileOffset}`;
      byFrame.set(k, [...(byFrame.get(k) ?? []), i]);
    });
    return [...byFrame.values()];
  }

  async function readsFail(files: string[], map: ExtentMap, table: Buffer, at: number, message: RegExp): Promise<void> {
    const srv = await serve(scratch, files, { params: [`worker=${BAD}`], env: { VNBD_BAD_MODE: 'table', VNBD_BAD_TABLE: tableFile(table) } });
    const [r] = await nbdOps(srv.uri, [['pread', map.extents[at].start, Math.min(4096, map.extents[at].length)]]);
    expect(r).toMatchObject({ ok: false, errno: 'EIO' });
    expect(srv.stderr()).toMatch(message);
  }

  test('decoded size differs from the frame\'s content size field', async () => {
    const [frame] = frameExtents(lz4Map);
    const t = mutated(lz4Map, (b, rec) => {
      for (const i of frame) b.writeUInt32LE(lz4Map.extents[i].usize + 1, rec(i) + 44);
    });
    await readsFail([lz4File], lz4Map, t, frame[0], /corrupt LZ4 frame at offset \d+: content size field \d+, expected \d+/);
  });

  test('two extents of one frame with different decoded sizes', async () => {
    // one LZ4 extent split in two (as an incremental would cut it), the second with usize + 1
    const files = [lz4File];
    const k = lz4Map.extents.findIndex((e) => e.kind === ExtentKind.Lz4 && e.length >= 8192);
    expect(k).toBeGreaterThanOrEqual(0);
    const e = lz4Map.extents[k];
    const half = 4096;
    const map: ExtentMap = {
      ...lz4Map,
      extents: [
        ...lz4Map.extents.slice(0, k),
        { ...e, length: half },
        { ...e, start: e.start + half, length: e.length - half, sliceOffset: e.sliceOffset + half },
        ...lz4Map.extents.slice(k + 1),
      ],
    };
    const [a, b2] = [k, k + 1];
    const t = mutated(map, (b, rec) => void b.writeUInt32LE(map.extents[b2].usize + 1, rec(b2) + 44));
    const srv = await serve(scratch, files, { params: [`worker=${BAD}`], env: { VNBD_BAD_MODE: 'table', VNBD_BAD_TABLE: tableFile(t) } });
    const ops: [string, number, number][] = [['pread', map.extents[a].start, 512], ['pread', map.extents[b2].start, 512]];
    const res = await nbdOps(srv.uri, ops);
    expect(res.some((r) => !r.ok && r.errno === 'EIO')).toBe(true);
    expect(srv.stderr()).toMatch(/is recorded with two decoded sizes/);
  });

  test('a frame offset that does not point at a frame', async () => {
    const [frame] = frameExtents(lz4Map);
    const t = mutated(lz4Map, (b, rec) => {
      for (const i of frame) w64(b, rec(i) + 16, lz4Map.extents[i].fileOffset + 1);
    });
    await readsFail([lz4File], lz4Map, t, frame[0], /corrupt LZ4 frame at offset \d+: ERROR_frameType_unknown/);
  });
});

describe('read protocol of lz4=worker: malformed answers fail the request with EIO', () => {
  test.each([
    ['an error answer', 'error', [], 'EIO', /virtnbd: worker: hostile answer/],
    ['ENOMEM', 'enomem', [], 'ENOMEM', /no memory, says the worker/],
    ['an error message over 64 KiB', 'bigmsg', [], 'EIO', /failed reading the error message .*malformed answer/],
    ['a data length other than asked', 'badlen', [], 'EIO', /failed reading the data .*malformed answer/],
    ['data cut short', 'shortdata', [], 'EIO', /failed reading the data .*the worker exited/],
    ['no answer (timeout=2)', 'none', ['timeout=2'], 'EIO', /failed reading the answer header .*timed out/],
  ])('%s', async (_name, answer, params, errno, message) => {
    const e = lz4Map.extents[idx(lz4Map, ExtentKind.Lz4)];
    const srv = await serve(scratch, [lz4File], {
      params: [`worker=${BAD}`, 'lz4=worker', 'workers=1', ...params],
      env: { VNBD_BAD_MODE: 'table', VNBD_BAD_TABLE: tableFile(encodeTable(lz4Map)), VNBD_BAD_ANSWER: answer },
    });
    const [r] = await nbdOps(srv.uri, [['pread', e.start, 4096]]);
    expect(r).toMatchObject({ ok: false, errno });
    expect(srv.stderr()).toMatch(message);
  });
});

describe('the worker reads the files the shim opened', () => {
  test('--fds=4: descriptors 4.. are the files of file=, read-only regular files, nothing more', async () => {
    const other = join(scratch, 'fds', 'vda.inc.virtnbdbackup.1.data');
    mkdirSync(join(scratch, 'fds'));
    copyFileSync(join(SETS, 'd2', 'backup', 'vda.inc.virtnbdbackup.1.data'), other);
    const files = [lz4File, other];
    const map = resolveChain(files.map((f) => indexSaveset(f)));
    const out = join(scratch, 'fds.out');
    const srv = await serve(scratch, files, { params: [`worker=${BAD}`], env: { VNBD_BAD_MODE: 'fds', VNBD_BAD_OUT: out, VNBD_BAD_TABLE: tableFile(encodeTable(map)) } });
    const lines = readFileSync(out, 'utf8').split('\n');
    expect(lines[0]).toBe('--fds=4');
    files.forEach((f, i) => {
      const st = statSync(f);
      expect(lines[1 + i]).toBe(`${st.dev}:${st.ino}:${st.size}:${st.mode}`);
    });
    // the only regular files open in the worker are these (its stdio are /dev/null and nbdkit's stderr)
    expect(lines[1 + files.length]).toBe(files.map((f, i) => `${4 + i}=${f}`).join(' '));
    await srv.stop();
  });

  test('the real worker resolves through the descriptors: a file replaced after the shim opened it is not what is indexed', async () => {
    // node= is a wrapper that, when the shim starts the worker (after it opened the files),
    // renames garbage over the file. Indexing by path would fail ("not a saveset"); the worker
    // indexes the descriptor, so nbdkit starts; reads then fail because the path was replaced.
    const dir = mkdtempSync(join(scratch, 'swap-'));
    const file = join(dir, 'vda.full.data');
    copyFileSync(lz4File, file);
    writeFileSync(join(dir, 'garbage'), 'not a saveset\n'.repeat(100));
    const wrapper = join(dir, 'node-wrapper.sh');
    writeFileSync(wrapper, `#!/bin/sh\nmv -f '${join(dir, 'garbage')}' '${file}' || exit 99\nexec '${process.execPath}' "$@"\n`, { mode: 0o755 });
    const srv = await serve(scratch, [file], { params: [`node=${wrapper}`, 'recheck=0'] });
    expect(readFileSync(file, 'utf8')).toMatch(/^not a saveset/);
    const e = lz4Map.extents[idx(lz4Map, ExtentKind.Lz4)];
    const [r] = await nbdOps(srv.uri, [['pread', e.start, 4096]]);
    expect(r).toMatchObject({ ok: false, errno: 'EIO' });
    expect(srv.stderr()).toContain(`${file}: the file was replaced or removed after it was mapped`);
  });
});
