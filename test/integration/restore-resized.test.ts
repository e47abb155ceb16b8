/**
 * Restore of resized disks and `--compress` (issue 4), with real qemu-img / qemu-nbd:
 *
 * - the synthetic chain of test/helpers/resized-chain.ts (grown, shrunk to a size that is not
 *   cluster aligned, grown again), plain and LZ4, restored with the real command
 *   (`node bin/virtnbdrestore -i SET -o OUT [--until virtnbdbackup.N]`) at every point: the image
 *   has the point's virtual size and its content (qemu-img convert -O raw) has the SHA-256 of the
 *   point's raw image; the resizes are logged;
 * - compressed restores (restoreDisk `compress`, the option behind `--compress`): the image has
 *   compressed clusters (`qemu-img check`), is smaller than the uncompressed restore, and has the
 *   exact content — on the resized chain at every point, and on a chain whose LZ4 frames span
 *   several 4 MiB windows with a 128 KiB cluster size taken from the qcow.json; refused
 *   combinations (raw target, preallocation) are written uncompressed and still exact.
 * Needs dist/ (`npx tsc`) for the command and the plugin .so for the qemu-img method.
 */
import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { restoreDisk } from '../../src/restore/restore-disk.js';
import { writeImageFile } from '../../src/devtools/image-chain.js';
import { prng } from '../../src/devtools/prng.js';
import { writeResizedSet, type ResizedPoint } from '../helpers/resized-chain.js';
import { recordingLogger } from '../unit/backup/recording-logger.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'virtnbdrestore');
const MiB = 1024 * 1024;
const DEV = 'vda';

let work = '';
let outs = 0;
const sets: Record<'plain' | 'lz4', { dir: string; points: ResizedPoint[] }> = {} as never;

const vmconfig = (): string =>
  `<domain type='kvm'>\n  <name>virtnbd-resized</name>\n  <memory unit='KiB'>65536</memory>\n` +
  `  <os><type arch='x86_64'>hvm</type></os>\n  <devices>\n    <disk type='file' device='disk'>\n` +
  `      <driver name='qemu' type='qcow2'/>\n      <source file='/nonexistent/${DEV}.qcow2'/>\n` +
  `      <target dev='${DEV}' bus='virtio'/>\n    </disk>\n  </devices>\n</domain>\n`;

function outDir(): string {
  const d = join(work, `out-${++outs}`);
  mkdirSync(d);
  return d;
}

async function fileSha(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
}

/** SHA-256 of an image's guest content and its virtual size. */
async function content(image: string): Promise<{ sha: string; size: number }> {
  const info = JSON.parse((await execa('qemu-img', ['info', '--output', 'json', image])).stdout) as { 'virtual-size': number };
  const raw = `${image}.check.raw`;
  await execa('qemu-img', ['convert', '-O', 'raw', image, raw]);
  try {
    return { sha: await fileSha(raw), size: info['virtual-size'] };
  } finally {
    rmSync(raw, { force: true });
  }
}

/** Percentage of compressed clusters reported by qemu-img check (0 when none). */
async function compressedShare(image: string): Promise<number> {
  const r = await execa('qemu-img', ['check', image], { reject: false });
  expect(r.stdout).toMatch(/No errors were found/);
  const m = /([0-9.]+)% compressed clusters/.exec(r.stdout);
  return m ? Number(m[1]) : 0;
}

beforeAll(async () => {
  work = mkdtempSync('/var/tmp/vnbd-restore-resized-');
  for (const [key, compress] of [['plain', false], ['lz4', 2]] as const) {
    const dir = join(work, key);
    mkdirSync(dir);
    const points = await writeResizedSet(dir, work, DEV, compress);
    for (const p of points) writeFileSync(join(dir, `vmconfig.${p.checkpoint}.xml`), vmconfig());
    sets[key] = { dir, points };
  }
}, 60_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe.each(['plain', 'lz4'] as const)('virtnbdrestore of a resized %s chain', (key) => {
  test.each([0, 1, 2, 3, 4])('point %i: virtual size and content equal the point', async (i) => {
    const { dir, points } = sets[key];
    const p = points[i]!;
    const out = outDir();
    const args = [BIN, '-i', dir, '-o', out, '-n', '-L', join(out, 'restore.log'), '-v'];
    if (i < points.length - 1) args.push('--until', p.checkpoint);
    const r = await execa(process.execPath, args, { reject: false, all: true, timeout: 60_000 });
    if (r.exitCode !== 0) throw new Error(`virtnbdrestore exited ${r.exitCode}:\n${r.all}`);
    const got = await content(join(out, `${DEV}.qcow2`));
    expect(got.size).toBe(p.size);
    expect(got.sha).toBe(p.sha);
    if (i >= 2) expect(r.all).toMatch(/was shrunk from 12582912 to 6296064 bytes at \[vda\.inc\.virtnbdbackup\.2\.data\]/);
    if (i === 0) expect(r.all).not.toMatch(/was (grown|shrunk)/);
  });
});

describe('compressed restore (--compress)', () => {
  const restore = async (
    dir: string,
    o: { until?: string; compress: boolean; format?: string; preallocate?: boolean; qcowJson?: string; method?: 'own' | 'qemu-img' },
  ): Promise<{ path: string; log: ReturnType<typeof recordingLogger> }> => {
    const log = recordingLogger();
    const r = await restoreDisk({
      input: dir, output: outDir(), dev: DEV, until: o.until, targetName: `${DEV}.img`, format: o.format, qcowJson: o.qcowJson,
      preallocate: o.preallocate ?? false, raw: false, log, compress: o.compress, method: o.method,
    });
    expect(log.counts.errors).toBe(0);
    return { path: r.path, log };
  };

  test.each([
    ['plain', 1],
    ['plain', 3],
    ['lz4', 0],
    ['lz4', 3],
    ['lz4', 4],
  ] as const)('%s chain, point %i: compressed clusters, exact content', async (key, i) => {
    const { dir, points } = sets[key];
    const p = points[i]!;
    const until = i < points.length - 1 ? p.checkpoint : undefined;
    const c = await restore(dir, { until, compress: true });
    const u = await restore(dir, { until, compress: false });
    expect(await compressedShare(c.path)).toBeGreaterThan(0);
    expect(await compressedShare(u.path)).toBe(0);
    expect(statSync(c.path).size).toBeLessThan(statSync(u.path).size);
    const got = await content(c.path);
    expect(got).toEqual({ sha: p.sha, size: p.size });
  });

  test('the command: virtnbdrestore --compress', async () => {
    const { dir, points } = sets.lz4;
    const p = points[3]!;
    const out = outDir();
    const r = await execa(process.execPath, [BIN, '-i', dir, '-o', out, '-n', '--until', p.checkpoint, '--compress', '-L', join(out, 'restore.log')], {
      reject: false,
      all: true,
      timeout: 60_000,
    });
    if (r.exitCode !== 0) throw new Error(`virtnbdrestore --compress exited ${r.exitCode}:\n${r.all}`);
    expect(r.all).not.toMatch(/not supported/);
    const image = join(out, `${DEV}.qcow2`);
    expect(await compressedShare(image)).toBeGreaterThan(0);
    expect(await content(image)).toEqual({ sha: p.sha, size: p.size });
  });

  test('LZ4 frames spanning several windows, 128 KiB clusters from the qcow.json, an inc rewriting parts of them', async () => {
    const dir = join(work, 'wide');
    mkdirSync(dir);
    const img = join(work, 'wide0.raw');
    const img1 = join(work, 'wide1.raw');
    const size = 24 * MiB;
    const put = (path: string, start: number, length: number, seed: number): void => {
      const r = prng(seed);
      const b = Buffer.alloc(length);
      for (let k = 0; k < length; k++) b[k] = k % 3 === 0 ? Math.floor(r() * 256) : k % 199;
      const fd = openSync(path, 'r+');
      writeSync(fd, b, 0, length, start);
      closeSync(fd);
    };
    writeFileSync(img, '');
    truncateSync(img, size);
    put(img, 1 * MiB + 4096, 14 * MiB, 11); // one data extent: a single LZ4 frame over 4 windows
    put(img, 17 * MiB + 100 * 1024, 3000, 12); // a few bytes inside one 128 KiB cluster
    await execa('cp', ['--sparse=always', img, img1]);
    put(img1, 4 * MiB - 64 * 1024, 128 * 1024, 13); // across a window boundary, inside the frame
    put(img1, 9 * MiB, 4096, 14);
    const common = { dev: DEV, compress: 2 as const, blockSize: 4096 };
    await writeImageFile({ ...common, image: img, out: join(dir, `${DEV}.full.data`), level: 'full', checkpointName: 'virtnbdbackup.0', parentCheckpoint: '' });
    await writeImageFile({ ...common, image: img1, previous: img, out: join(dir, `${DEV}.inc.virtnbdbackup.1.data`), level: 'inc', checkpointName: 'virtnbdbackup.1', parentCheckpoint: 'virtnbdbackup.0' });
    const qcowJson = join(dir, `${DEV}.virtnbdbackup.1.qcow.json`);
    writeFileSync(qcowJson, JSON.stringify({ 'cluster-size': 131072, 'format-specific': { type: 'qcow2', data: { compat: '1.1' } } }));
    const c = await restore(dir, { compress: true, qcowJson });
    const info = JSON.parse((await execa('qemu-img', ['info', '--output', 'json', c.path])).stdout) as { 'cluster-size': number };
    expect(info['cluster-size']).toBe(131072);
    expect(await compressedShare(c.path)).toBeGreaterThan(50);
    expect((await content(c.path)).sha).toBe(await fileSha(img1));
    for (const n of readdirSync(dir)) expect(n).not.toMatch(/partial/);
  });

  test('the qemu-img copy method (plugin + qemu-img convert -c) writes compressed clusters too', async () => {
    const { dir, points } = sets.lz4;
    const p = points[3]!;
    const c = await restore(dir, { until: p.checkpoint, compress: true, method: 'qemu-img' });
    expect(await compressedShare(c.path)).toBeGreaterThan(0);
    expect(await content(c.path)).toEqual({ sha: p.sha, size: p.size });
  });

  test('a virtual size that is not a multiple of the cluster size is written uncompressed (INFO), content exact', async () => {
    const { dir, points } = sets.plain;
    const p = points[2]!;
    const c = await restore(dir, { until: p.checkpoint, compress: true });
    expect(c.log.at('INFO').join('\n')).toMatch(/multiple of the cluster size/);
    expect(await compressedShare(c.path)).toBe(0);
    expect(await content(c.path)).toEqual({ sha: p.sha, size: p.size });
  });

  test('raw targets and preallocated images are written uncompressed (INFO), content still exact', async () => {
    const { dir, points } = sets.lz4;
    const p = points[4]!;
    const raw = await restore(dir, { compress: true, format: 'raw' });
    expect(raw.log.at('INFO').join('\n')).toMatch(/Compression applies to qcow2 images only/);
    expect(await fileSha(raw.path)).toBe(p.sha);
    const pre = await restore(dir, { compress: true, preallocate: true });
    expect(pre.log.at('INFO').join('\n')).toMatch(/Compression is not possible in a preallocated image/);
    expect(await compressedShare(pre.path)).toBe(0);
    expect((await content(pre.path)).sha).toBe(p.sha);
  });
});
