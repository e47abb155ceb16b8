/**
 * restoreDisk (src/restore/restore-disk.ts) on copies of the upstream fixture sets
 * (test/fixtures/upstream-sets): every backup point of every disk restored and read back with
 * `qemu-img convert -O raw` against SHA256SUMS, the diff point through --until and --sequence,
 * thinness, qcow.json options (cluster size, lazy refcounts, external data file), refusal of an
 * existing target, LZ4 corruption and truncation (nothing left behind), --raw copies, side-file
 * selection (point.ts), and that no qemu-nbd / nbdkit of ours outlives a restore.
 * The `qemu-img` copy method needs the plugin .so and dist/ (`npm run build`).
 */
import { createHash } from 'node:crypto';
import {
  closeSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { restoreDisk, RestoreError, type RestoreDiskOptions } from '../../src/restore/restore-disk.js';
import { selectPointFiles, pointIdent } from '../../src/chain/point.js';
import { qemuImgCreateArgs } from '../../src/restore/target-image.js';
import { indexSaveset } from '../../src/saveset/reader.js';
import { resolveChain } from '../../src/chain/resolve.js';
import { ExtentKind } from '../../src/chain/extent-map.js';
import { pluginPath, workerPath } from '../../src/util/package-root.js';
import { SavesetWriter } from '../../src/saveset/writer.js';
import { buildMetadata } from '../../src/saveset/metadata.js';
import { prng, randInt } from '../../src/devtools/prng.js';
import { recordingLogger } from '../unit/backup/recording-logger.js';
import { sha256sums, diffIdentIn } from '../helpers/upstream-sets.js';
import { flipByte, writeFrames, type EditFrame } from '../helpers/saveset-edit.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SETS = join(ROOT, 'test', 'fixtures', 'upstream-sets');
const MiB = 1024 * 1024;

let scratch = '';
const setDir: Record<string, string> = {};
let outCount = 0;

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'vnbd-restore-disk-'));
  for (const set of ['d1', 'd2']) {
    setDir[set] = join(scratch, set);
    cpSync(join(SETS, set, 'backup'), setDir[set], { recursive: true });
  }
});

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/** A fresh, empty output directory. */
function outDir(): string {
  const d = join(scratch, `out-${++outCount}`);
  mkdirSync(d);
  return d;
}

const diffIdent = diffIdentIn;

/** SHA-256 of the guest contents of an image, read back by qemu-img. */
async function imageSha(path: string, format = 'qcow2'): Promise<string> {
  const raw = `${path}.check.raw`;
  await execa('qemu-img', ['convert', '-f', format, '-O', 'raw', path, raw]);
  try {
    return createHash('sha256').update(readFileSync(raw)).digest('hex');
  } finally {
    rmSync(raw, { force: true });
  }
}

async function imageInfo(path: string): Promise<Record<string, unknown> & { 'format-specific': { data: Record<string, unknown> } }> {
  return JSON.parse((await execa('qemu-img', ['info', '--output', 'json', '-U', path])).stdout);
}

/** Our helper processes still running: children of this process, and anything naming our scratch dir. */
async function leftovers(): Promise<string[]> {
  const kids = await execa('ps', ['-o', 'pid=,comm=', '--ppid', String(process.pid)], { reject: false });
  const own = String(kids.stdout)
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /qemu-nbd|nbdkit|qemu-img/.test(l));
  const byPath = await execa('pgrep', ['-af', scratch], { reject: false });
  const paths = String(byPath.stdout)
    .split('\n')
    .filter((l) => l.trim() !== '' && /qemu-nbd|nbdkit|qemu-img/.test(l));
  return [...own, ...paths];
}

function opts(over: Partial<RestoreDiskOptions> & Pick<RestoreDiskOptions, 'input' | 'output' | 'dev'>): RestoreDiskOptions {
  return { targetName: `${over.dev}.qcow2`, preallocate: false, raw: false, log: recordingLogger(), ...over };
}

/** Points of the fixture README: name → how to select it (until). */
function points(dir: string, disk: string): [string, string | undefined][] {
  return [
    ['0', 'virtnbdbackup.0'],
    ['1', 'virtnbdbackup.1'],
    ['2', 'virtnbdbackup.2'],
    ['diff3', diffIdent(dir, disk)],
    ['3', undefined],
  ];
}

const cases: [string, string, string][] = [];
for (const set of ['d1', 'd2']) for (const disk of ['vda', 'sdb']) for (const p of ['0', '1', '2', 'diff3', '3']) cases.push([set, disk, p]);

describe('every backup point restores to the reference contents', () => {
  test.each(cases)('%s %s point %s', async (set, disk, point) => {
    const dir = setDir[set];
    const until = points(dir, disk).find(([p]) => p === point)![1];
    const sel = selectPointFiles(dir, disk, until);
    expect(sel.qcowJson?.exact).toBe(true);
    const out = outDir();
    const printed: string[] = [];
    const progress: [number, number][] = [];
    const r = await restoreDisk(
      opts({ input: dir, output: out, dev: disk, until, qcowJson: sel.qcowJson?.path, printMeta: (j) => printed.push(j), progress: (d, t) => progress.push([d, t]) }),
    );
    expect(r.path).toBe(join(out, `${disk}.qcow2`));
    expect(readdirSync(out)).toEqual([`${disk}.qcow2`]);
    expect(await imageSha(r.path)).toBe(sha256sums(set).get(`${disk}.${point}.raw`));

    // one JSON metadata object per applied file, in chain order
    expect(printed.length).toBe(sel.chain.files.length);
    expect(printed.map((j) => (JSON.parse(j) as { checkpointName: string }).checkpointName)).toEqual(sel.chain.files.map((f) => f.metadata.checkpointName));
    // progress ends at the total data size
    expect(progress.length).toBeGreaterThan(0);
    expect(progress[progress.length - 1]).toEqual([r.dataBytes, r.dataBytes]);
    for (let i = 1; i < progress.length; i++) expect(progress[i][0]).toBeGreaterThanOrEqual(progress[i - 1][0]);

    // thin: allocation ≈ data (+ qcow2 metadata and cluster rounding)
    const info = await imageInfo(r.path);
    expect(info['virtual-size']).toBe(r.virtualSize);
    expect(r.allocatedBytes).toBeLessThanOrEqual(r.dataBytes + 2 * MiB);
    expect(info['cluster-size']).toBe(65536);
    expect(await leftovers()).toEqual([]);
  });
});

describe('--sequence and --until', () => {
  test('the diff point through a sequence; --disk of another disk and a sequence not starting with a base are refused', async () => {
    const dir = setDir.d2;
    const diff = `vda.diff.${diffIdent(dir, 'vda')}.data`;
    const seq = ['vda.full.data', 'vda.inc.virtnbdbackup.1.data', 'vda.inc.virtnbdbackup.2.data', diff];
    const out = outDir();
    const log = recordingLogger();
    const r = await restoreDisk(opts({ input: dir, output: out, dev: 'vda', targetName: 'vda', sequence: seq, log }));
    expect(r.path).toBe(join(out, 'vda'));
    expect(await imageSha(r.path)).toBe(sha256sums('d2').get('vda.diff3.raw'));
    // no qcow.json given: default options, with the warning of §11.5
    expect(log.at('WARNING')).toEqual([`No QCOW image config found in [${dir}], will use default options.`]);

    // sequence + until: stop after the file that created the checkpoint
    const out2 = outDir();
    const r2 = await restoreDisk(opts({ input: dir, output: out2, dev: 'vda', sequence: seq, until: 'virtnbdbackup.1' }));
    expect(r2.files.length).toBe(2);
    expect(await imageSha(r2.path)).toBe(sha256sums('d2').get('vda.1.raw'));

    const out3 = outDir();
    await expect(restoreDisk(opts({ input: dir, output: out3, dev: 'vda', sequence: seq.slice(1) }))).rejects.toThrow(
      /^Sequence must start with full or copy backup\./,
    );
    await expect(restoreDisk(opts({ input: dir, output: out3, dev: 'vda', sequence: ['vda.full.data', 'sdb.inc.virtnbdbackup.1.data'] }))).rejects.toThrow(
      /belongs to disk \[sdb\]/,
    );
    await expect(restoreDisk(opts({ input: dir, output: out3, dev: 'sdb', sequence: seq }))).rejects.toThrow(/belongs to disk \[vda\], not \[sdb\]/);
    expect(readdirSync(out3)).toEqual([]);
  });

  test('an unknown --until names the available checkpoints; nothing is created', async () => {
    const out = outDir();
    const p = restoreDisk(opts({ input: setDir.d1, output: out, dev: 'vda', until: 'virtnbdbackup.9' }));
    await expect(p).rejects.toThrow(/virtnbdbackup\.9.*available: .*virtnbdbackup\.3/);
    await expect(p).rejects.toMatchObject({ stage: 'chain' });
    expect(readdirSync(out)).toEqual([]);
  });
});

describe('point selection (point.ts)', () => {
  test('ident, vmconfig and qcow.json of each point; a missing one falls back to the newest earlier point', () => {
    const dir = setDir.d1;
    const diff = diffIdent(dir, 'vda');
    const sel = selectPointFiles(dir, 'vda', 'virtnbdbackup.1');
    expect(sel.ident).toBe('virtnbdbackup.1');
    expect(sel.idents).toEqual(['virtnbdbackup.1', 'virtnbdbackup.0']);
    expect(sel.vmconfig).toEqual({ path: join(dir, 'vmconfig.virtnbdbackup.1.xml'), ident: 'virtnbdbackup.1', exact: true });
    expect(sel.qcowJson).toEqual({ path: join(dir, 'vda.virtnbdbackup.1.qcow.json'), ident: 'virtnbdbackup.1', exact: true });

    const d = selectPointFiles(dir, 'vda', diff);
    expect(d.ident).toBe(diff);
    expect(pointIdent(d.chain.files[d.chain.files.length - 1])).toBe(diff);
    expect(d.vmconfig?.path).toBe(join(dir, `vmconfig.${diff}.xml`));
    expect(d.qcowJson?.path).toBe(join(dir, `vda.${diff}.qcow.json`));

    const newest = selectPointFiles(dir, undefined, undefined);
    expect(newest.ident).toBe('virtnbdbackup.3');
    expect(newest.chain.files.map((f) => f.name)).toContain(`${newest.dev}.diff.${diffIdent(dir, newest.dev)}.data`);

    const copy = join(scratch, 'd1-fallback');
    cpSync(dir, copy, { recursive: true });
    rmSync(join(copy, 'vmconfig.virtnbdbackup.2.xml'));
    rmSync(join(copy, 'vda.virtnbdbackup.2.qcow.json'));
    rmSync(join(copy, 'vda.virtnbdbackup.1.qcow.json'));
    const f = selectPointFiles(copy, 'vda', 'virtnbdbackup.2');
    expect(f.vmconfig).toEqual({ path: join(copy, 'vmconfig.virtnbdbackup.1.xml'), ident: 'virtnbdbackup.1', exact: false });
    expect(f.qcowJson).toEqual({ path: join(copy, 'vda.virtnbdbackup.0.qcow.json'), ident: 'virtnbdbackup.0', exact: false });
    for (const n of readdirSync(copy)) if (n.startsWith('vmconfig.')) rmSync(join(copy, n));
    expect(selectPointFiles(copy, 'vda').vmconfig).toBeUndefined();
  });
});

describe('target image', () => {
  test('qcow.json options are applied: cluster size, lazy refcounts, external data file (D24)', async () => {
    const dir = join(scratch, 'd1-qcow');
    cpSync(setDir.d1, dir, { recursive: true });
    const qj = join(dir, 'vda.virtnbdbackup.3.qcow.json');
    const json = JSON.parse(readFileSync(qj, 'utf8'));
    json['cluster-size'] = 131072;
    json['format-specific'].data['lazy-refcounts'] = true;
    json['format-specific'].data['data-file'] = '/var/lib/libvirt/images/somewhere/vda-data.raw';
    json['format-specific'].data['extended-l2'] = 'yes'; // invalid: ignored with a warning
    writeFileSync(qj, JSON.stringify(json));

    const out = outDir();
    const log = recordingLogger();
    const r = await restoreDisk(opts({ input: dir, output: out, dev: 'vda', qcowJson: qj, log }));
    expect(log.at('WARNING')).toEqual([`Ignoring invalid value "yes" of [extended-l2] in [${qj}].`]);
    const info = await imageInfo(r.path);
    expect(info['cluster-size']).toBe(131072);
    expect(info['format-specific'].data['lazy-refcounts']).toBe(true);
    expect(info['format-specific'].data['data-file']).toBe(join(out, 'vda-data.raw'));
    expect(readdirSync(out).sort()).toEqual(['vda-data.raw', 'vda.qcow2']);
    expect(await imageSha(r.path)).toBe(sha256sums('d1').get('vda.3.raw'));

    // the data file name exists in the output: refused, nothing created, the file untouched
    const out2 = outDir();
    writeFileSync(join(out2, 'vda-data.raw'), 'precious');
    await expect(restoreDisk(opts({ input: dir, output: out2, dev: 'vda', qcowJson: qj }))).rejects.toThrow(
      `Data file already exists: [${join(out2, 'vda-data.raw')}], won't overwrite.`,
    );
    expect(readdirSync(out2)).toEqual(['vda-data.raw']);
    expect(readFileSync(join(out2, 'vda-data.raw'), 'utf8')).toBe('precious');
  });

  test('qemu-img create argv: only present and valid options, preallocation, absolute paths', () => {
    expect(qemuImgCreateArgs({ format: 'qcow2', path: '/o/x.partial', size: 1024, preallocate: true, qcow: { clusterSize: 4096, compat: '1.1', compressionType: 'zstd', extendedL2: true } })).toEqual([
      'create', '-q', '-f', 'qcow2', '/o/x.partial', '-o', 'size=1024', '-o', 'preallocation=full', '-o', 'compat=1.1', '-o', 'cluster_size=4096',
      '-o', 'compression_type=zstd', '-o', 'extended_l2=on',
    ]);
    expect(qemuImgCreateArgs({ format: 'raw', path: '/o/y', size: 5, preallocate: false, qcow: { clusterSize: 4096 } })).toEqual(['create', '-q', '-f', 'raw', '/o/y', '-o', 'size=5']);
    expect(
      qemuImgCreateArgs({ format: 'qcow2', path: '/o/z', size: 5, preallocate: false, qcow: { dataFile: 'a,b', dataFileRaw: true }, dataFilePath: '/o/a,b' }),
    ).toEqual(['create', '-q', '-f', 'qcow2', '/o/z', '-o', 'size=5', '-o', 'data_file=/o/a,,b', '-o', 'data_file_raw=on']);
    expect(() => qemuImgCreateArgs({ format: 'raw', path: 'rel', size: 5, preallocate: false })).toThrow(/absolute/);
  });

  test('preallocation and raw format', async () => {
    const out = outDir();
    const r = await restoreDisk(opts({ input: setDir.d2, output: out, dev: 'sdb', targetName: 'sdb.raw', format: 'raw', preallocate: true }));
    const info = await imageInfo(r.path);
    expect(info.format).toBe('raw');
    expect(r.allocatedBytes).toBeGreaterThanOrEqual(r.virtualSize);
    expect(await imageSha(r.path, 'raw')).toBe(sha256sums('d2').get('sdb.3.raw'));
  });

  test('an existing target is refused and left unchanged', async () => {
    const out = outDir();
    const target = join(out, 'vda.qcow2');
    writeFileSync(target, 'do not touch');
    const p = restoreDisk(opts({ input: setDir.d1, output: out, dev: 'vda' }));
    await expect(p).rejects.toThrow(`Target file already exists: [${target}], won't overwrite.`);
    await expect(p).rejects.toBeInstanceOf(RestoreError);
    expect(readdirSync(out)).toEqual(['vda.qcow2']);
    expect(readFileSync(target, 'utf8')).toBe('do not touch');
    expect(await leftovers()).toEqual([]);
  });
});

describe('failures leave nothing behind', () => {
  function flipInLz4Frame(file: string): void {
    const map = resolveChain([indexSaveset(file)]);
    const lz4 = map.extents.find((e) => e.kind === ExtentKind.Lz4 && e.csize > 64);
    if (!lz4) throw new Error(`no LZ4 frame in ${file}`);
    const at = lz4.fileOffset + Math.floor(lz4.csize / 2);
    flipByte(file, at);
  }

  test.each([['own'], ['qemu-img']] as const)('a flipped byte in an LZ4 frame (copy method %s): rejects, no partial, no target, no helper left', async (method) => {
    if (method === 'qemu-img') {
      const missing = [pluginPath(), workerPath()].filter((p) => !existsSync(p));
      if (missing.length > 0) throw new Error(`not built: ${missing.join(', ')} — run \`npm run build\` first`);
    }
    const dir = join(scratch, `d2-corrupt-${method}`);
    cpSync(setDir.d2, dir, { recursive: true });
    flipInLz4Frame(join(dir, 'vda.inc.virtnbdbackup.2.data'));
    const out = outDir();
    const p = restoreDisk(opts({ input: dir, output: out, dev: 'vda', method }));
    await expect(p).rejects.toMatchObject({ stage: 'copy', dev: 'vda' });
    await expect(p).rejects.toThrow(method === 'own' ? /vda\.inc\.virtnbdbackup\.2\.data: at byte offset \d+: corrupt LZ4 frame/ : /qemu-img convert .* failed/);
    expect(readdirSync(out)).toEqual([]);
    expect(await leftovers()).toEqual([]);

    // the same set still restores the point before the damaged file
    const ok = await restoreDisk(opts({ input: dir, output: out, dev: 'vda', until: 'virtnbdbackup.1', method }));
    expect(await imageSha(ok.path)).toBe(sha256sums('d2').get('vda.1.raw'));
    expect(await leftovers()).toEqual([]);
  });

  test('a truncated data file fails while the chain is resolved; nothing is created', async () => {
    const dir = join(scratch, 'd1-trunc');
    cpSync(setDir.d1, dir, { recursive: true });
    const f = join(dir, 'vda.inc.virtnbdbackup.3.data');
    writeFileSync(f, readFileSync(f).subarray(0, statSync(f).size - 100));
    const out = outDir();
    const p = restoreDisk(opts({ input: dir, output: out, dev: 'vda' }));
    await expect(p).rejects.toMatchObject({ stage: 'chain' });
    await expect(p).rejects.toThrow(/vda\.inc\.virtnbdbackup\.3\.data/);
    expect(readdirSync(out)).toEqual([]);
  });

  test('an aborted restore removes the partial image', async () => {
    const out = outDir();
    const ac = new AbortController();
    const p = restoreDisk(opts({ input: setDir.d2, output: out, dev: 'vda', signal: ac.signal, progress: () => ac.abort(new Error('stop now')) }));
    await expect(p).rejects.toThrow(/stop now/);
    expect(readdirSync(out)).toEqual([]);
    expect(await leftovers()).toEqual([]);
  });
});

describe('copy methods agree', () => {
  test('qemu-img method (nbdkit + plugin → qemu-img convert -n) gives the same contents, thin', async () => {
    const missing = [pluginPath(), workerPath()].filter((p) => !existsSync(p));
    if (missing.length > 0) throw new Error(`not built: ${missing.join(', ')} — run \`npm run build\` first`);
    const out = outDir();
    const progress: number[] = [];
    const r = await restoreDisk(opts({ input: setDir.d2, output: out, dev: 'vda', method: 'qemu-img', progress: (d) => progress.push(d) }));
    expect(await imageSha(r.path)).toBe(sha256sums('d2').get('vda.3.raw'));
    expect(progress[progress.length - 1]).toBe(r.dataBytes);
    expect(r.allocatedBytes).toBeLessThanOrEqual(r.dataBytes + 2 * MiB);
    expect(await leftovers()).toEqual([]);
  });
});

describe('--raw', () => {
  test('a raw-format disk is copied byte for byte, holes kept; without --raw it goes through qemu-img', async () => {
    const dir = join(scratch, 'rawset');
    cpSync(setDir.d1, dir, { recursive: true });
    // a raw disk's file as a full/copy run writes it: a plain sparse image named <dev>.copy.data
    const img = join(dir, 'vdb.copy.data');
    const size = 8 * MiB;
    const fd = openSync(img, 'w');
    writeSync(fd, Buffer.alloc(65536, 0xab), 0, 65536, MiB);
    writeSync(fd, Buffer.from('end of disk'), 0, 11, size - 11);
    closeSync(fd);
    const want = createHash('sha256').update(readFileSync(img)).digest('hex');

    const out = outDir();
    const r = await restoreDisk(opts({ input: dir, output: out, dev: 'vdb', targetName: 'vdb.img', raw: true, format: 'raw', until: 'virtnbdbackup.2' }));
    expect(r.rawCopy).toBe(true);
    expect(r.virtualSize).toBe(size);
    expect(createHash('sha256').update(readFileSync(r.path)).digest('hex')).toBe(want);
    expect(r.allocatedBytes).toBeLessThan(MiB);
    expect(readdirSync(out)).toEqual(['vdb.img']);
    await expect(restoreDisk(opts({ input: dir, output: out, dev: 'vdb', targetName: 'vdb.img', raw: true, format: 'raw' }))).rejects.toThrow(
      /Target file already exists/,
    );

    const out2 = outDir();
    const r2 = await restoreDisk(opts({ input: dir, output: out2, dev: 'vdb', targetName: 'vdb.img', raw: false }));
    expect(r2.rawCopy).toBe(false);
    expect(await imageSha(r2.path, 'raw')).toBe(want);
  });
});

describe('unaligned extents, split LZ4 frames, a grown disk', () => {
  type Frame = EditFrame;
  /** A stream of our writer; returns nothing, applies the frames to `image` as a restore must. */
  async function writeStream(path: string, frames: Frame[], size: number, inc: boolean, cp: string, parent: string, compress: false | number, image: Buffer): Promise<void> {
    const dataSize = frames.reduce((n, f) => n + (f.data?.length ?? 0), 0);
    const meta = buildMetadata({ virtualSize: size, dataSize, diskName: 'vdx', diskFormat: 'qcow2', checkpointName: cp, parentCheckpoint: parent, compressed: compress, incremental: inc });
    const w = await SavesetWriter.create(path, meta, { compress, fsync: false });
    await writeFrames(w, frames, image);
  }

  function bytes(r: () => number, n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    const pat = Buffer.from(Array.from({ length: 509 }, () => randInt(r, 1, 255)));
    b.fill(pat);
    for (let i = 0; i < n; i += 4093) b[i] = randInt(r, 0, 255);
    return b;
  }

  test.each([[false], [2]] as const)('compress %s: contents equal the expected image', async (compress) => {
    const r = prng(compress === false ? 11 : 12);
    const dir = join(scratch, `odd-${compress}`);
    mkdirSync(dir);
    // virtual sizes of real disks are whole sectors (qemu rounds an image's size up to 512)
    const size0 = 40 * MiB + 3 * 512;
    const size1 = 44 * MiB + 5 * 512;
    const image = Buffer.alloc(size1);
    // full: one 36 MiB frame (two LZ4 chunks when compressed), odd-sized pieces, zero frames
    await writeStream(join(dir, 'vdx.full.data'), [
      { start: 0, zero: 1001 },
      { start: 1001, data: bytes(r, 36 * MiB + 17) },
      { start: 36 * MiB + 1018, zero: 3 * MiB },
      { start: 39 * MiB + 1018, data: bytes(r, 12345) },
      { start: 39 * MiB + 13363, zero: size0 - (39 * MiB + 13363) },
    ], size0, false, 'virtnbdbackup.0', '', compress, image);
    // inc: the disk grew; odd writes inside the big frame (it survives as several slices),
    // a zero frame punching it, data beyond the old end
    await writeStream(join(dir, 'vdx.inc.virtnbdbackup.1.data'), [
      { start: 777, data: bytes(r, 3333) },
      { start: 5 * MiB + 1, data: bytes(r, 65537) },
      { start: 20 * MiB + 3, zero: 511 },
      { start: 33 * MiB - 5, data: bytes(r, 10) },
      { start: 42 * MiB + 9, data: bytes(r, MiB + 3) },
    ], size1, true, 'virtnbdbackup.1', 'virtnbdbackup.0', compress, image);
    const out = outDir();
    const res = await restoreDisk(opts({ input: dir, output: out, dev: 'vdx' }));
    expect(res.virtualSize).toBe(size1);
    expect(await imageSha(res.path)).toBe(createHash('sha256').update(image).digest('hex'));
    expect(await leftovers()).toEqual([]);
  });
});
