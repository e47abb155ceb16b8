/**
 * virtnbdbackup (the real command, spawned) against a running TCG domain with three disks
 * (virtio qcow2 vda, SATA qcow2 sda, virtio raw vdb). Guest writes, zero writes and discards go
 * through qemu's block layer and into an independent shadow raw copy per disk (test/helpers/test-vm).
 * For a chain full → inc → inc → diff → inc, uncompressed and LZ4, every backup point is mapped
 * with our plugin and its SHA-256 compared with the shadow at that point; copy backups likewise.
 * Builds nothing: dist/, the addon and the plugin must exist.
 */
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jest } from '@jest/globals';
import { execa } from 'execa';
import { TestVm } from '../helpers/test-vm.js';
import { chainSha, fileSha } from '../helpers/map-sha.js';
import { lockTarget } from '../../src/backup/target-lock.js';
import { indexSaveset } from '../../src/saveset/reader.js';
import { adler32File } from '../../src/saveset/adler32.js';

jest.setTimeout(900_000);

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'virtnbdbackup');
const MiB = 1024 * 1024;
const KiB = 1024;

let vm: TestVm;
/** Backup points of each chain (by label), for the restore tests below. */
const chainPoints = new Map<string, Point[]>();

beforeAll(async () => {
  for (const p of [join(ROOT, 'dist', 'src', 'cli', 'virtnbdbackup.js'), join(ROOT, 'build', 'Release', 'virtnbd_native.node')]) {
    if (!existsSync(p)) throw new Error(`${p} is missing: run npm run build first`);
  }
  vm = await TestVm.create({
    disks: [
      { dev: 'vda', bus: 'virtio', format: 'qcow2', size: 64 * MiB },
      { dev: 'sda', bus: 'sata', format: 'qcow2', size: 32 * MiB },
      { dev: 'vdb', bus: 'virtio', format: 'raw', size: 16 * MiB },
    ],
  });
});

afterAll(async () => {
  await vm?.cleanup();
});

interface Run {
  code: number | undefined;
  stdout: string;
  stderr: string;
}

async function backup(args: string[]): Promise<Run> {
  const r = await execa(BIN, ['-d', vm.name, '--nocolor', '--socketfile', join(vm.dir, `nbd.${Date.now()}.sock`), '--scratchdir', vm.dir, ...args], {
    reject: false,
    stdin: 'ignore',
    timeout: 300_000,
  });
  return { code: r.exitCode, stdout: r.stdout, stderr: r.stderr };
}

async function backupOk(args: string[]): Promise<Run> {
  const r = await backup(args);
  if (r.code !== 0) throw new Error(`virtnbdbackup ${args.join(' ')} exited ${r.code}:\n${r.stderr}`);
  return r;
}

interface Point {
  /** --until value selecting this point */
  until: string;
  shas: Record<string, string>;
}

function shadowShas(devs: string[]): Record<string, string> {
  return Object.fromEntries(devs.map((d) => [d, vm.shadowSha(d)]));
}

/** A round of guest activity between two backups: data, zero writes, discards, on both qcow disks. */
async function activity(round: number): Promise<void> {
  const p = 0x20 + round;
  await vm.write('vda', (4 + round) * MiB, 1 * MiB + 512, p);
  await vm.write('vda', 40 * MiB + round * 64 * KiB, 4 * KiB, p + 1);
  await vm.zero('vda', 1 * MiB + round * 256 * KiB, 128 * KiB); // over data written before the VM started
  await vm.discard('vda', (4 + round - 1) * MiB, 64 * KiB); // over data of the previous round (round ≥ 1)
  await vm.write('sda', round * MiB, 256 * KiB, p + 2);
  await vm.zero('sda', 512 * KiB + round * 64 * KiB, 64 * KiB);
  await vm.write('vdb', round * MiB, 64 * KiB, p + 3);
}

/** `base`: first activity round of this chain (chains on one VM must not repeat the same writes). */
async function runChain(dir: string, extra: string[], base: number): Promise<Point[]> {
  const points: Point[] = [];
  await backupOk(['-l', 'full', '-o', dir, '--raw', ...extra]);
  points.push({ until: 'virtnbdbackup.0', shas: shadowShas(['vda', 'sda', 'vdb']) });
  await activity(base + 0);
  await backupOk(['-l', 'inc', '-o', dir, ...extra]);
  points.push({ until: 'virtnbdbackup.1', shas: shadowShas(['vda', 'sda']) });
  await activity(base + 1);
  await backupOk(['-l', 'auto', '-o', dir, ...extra]);
  points.push({ until: 'virtnbdbackup.2', shas: shadowShas(['vda', 'sda']) });
  await activity(base + 2);
  await backupOk(['-l', 'diff', '-o', dir, ...extra]);
  const diffFile = readdirSync(dir).find((n) => /^vda\.diff\.[0-9]+\.data$/.test(n));
  expect(diffFile).toBeDefined();
  points.push({ until: diffFile!, shas: shadowShas(['vda', 'sda']) });
  await activity(base + 3);
  await backupOk(['-l', 'inc', '-o', dir, ...extra]);
  points.push({ until: 'virtnbdbackup.3', shas: shadowShas(['vda', 'sda']) });
  return points;
}

async function checkPoints(dir: string, points: Point[]): Promise<void> {
  for (const p of points) {
    for (const dev of ['vda', 'sda']) {
      // a diff file name selects the vda file; the sda chain of that point is selected by its own diff file
      const until = p.until.startsWith('vda.') ? p.until.replace(/^vda\./, `${dev}.`) : p.until;
      const got = await chainSha(dir, dev, until);
      expect([dev, p.until, got.sha]).toEqual([dev, p.until, p.shas[dev]]);
    }
  }
  // newest point without --until
  const last = points[points.length - 1]!;
  expect((await chainSha(dir, 'vda')).sha).toBe(last.shas.vda);
}

test('the shadow copies agree with the guest-visible images (harness self-check)', async () => {
  for (const d of ['vda', 'sda', 'vdb']) expect(await vm.imageSha(d)).toBe(vm.shadowSha(d));
});

describe.each([
  ['uncompressed', [] as string[], 1],
  ['LZ4', ['-z'], 5],
])('chain full → inc → inc(auto) → diff → inc, %s', (label, extra, base) => {
  const dir = (): string => join(vm.dir, `chain-${label}`);
  let points: Point[] = [];

  test('every point maps to the disk content at that point', async () => {
    points = await runChain(dir(), extra, base);
    chainPoints.set(label, points);
    await checkPoints(dir(), points);
    // the shadow really changed between points (a test that cannot fail is a defect)
    expect(new Set(points.map((p) => p.shas.vda)).size).toBe(points.length);
  });

  test('set layout: data files, checksums, .cpt, checkpoint XMLs, side files, zero frames in incrementals', async () => {
    const names = readdirSync(dir()).sort();
    for (const n of [
      'vda.full.data', 'sda.full.data', 'vdb.copy.data',
      'vda.inc.virtnbdbackup.1.data', 'vda.inc.virtnbdbackup.2.data', 'vda.inc.virtnbdbackup.3.data',
      'vda.full.data.chksum', 'vda.inc.virtnbdbackup.3.data.chksum',
      `${vm.name}.cpt`, 'checkpoints', 'vmconfig.virtnbdbackup.0.xml', 'vda.virtnbdbackup.0.qcow.json',
    ]) expect(names).toContain(n);
    expect(names.filter((n) => n.endsWith('.partial'))).toEqual([]);
    expect(names.some((n) => /^vdb\.(inc|diff)\./.test(n))).toBe(false);
    expect(readFileSync(join(dir(), `${vm.name}.cpt`), 'utf8')).toBe('["virtnbdbackup.0", "virtnbdbackup.1", "virtnbdbackup.2", "virtnbdbackup.3"]');
    expect(readdirSync(join(dir(), 'checkpoints')).sort()).toEqual(['virtnbdbackup.0.xml', 'virtnbdbackup.1.xml', 'virtnbdbackup.2.xml', 'virtnbdbackup.3.xml']);
    expect(readFileSync(join(dir(), 'checkpoints', 'virtnbdbackup.1.xml'), 'utf8')).toMatch(/<parent>\s*<name>virtnbdbackup\.0<\/name>/);
    expect(JSON.parse(readFileSync(join(dir(), 'vda.virtnbdbackup.0.qcow.json'), 'utf8'))).toMatchObject({ format: 'qcow2' });
    // libvirt knows exactly the chain's checkpoints
    expect((await vm.dom.checkpointNames()).sort()).toEqual(['virtnbdbackup.0', 'virtnbdbackup.1', 'virtnbdbackup.2', 'virtnbdbackup.3']);
    // raw disk of the full: a plain image equal to the shadow at the full
    expect(await fileSha(join(dir(), 'vdb.copy.data'))).toBe(points[0]!.shas.vdb);
    // incrementals carry zero frames for the zeroed and discarded ranges (D1z), with the right metadata
    const inc = indexSaveset(join(dir(), 'vda.inc.virtnbdbackup.2.data'));
    expect(inc.metadata).toMatchObject({ checkpointName: 'virtnbdbackup.2', parentCheckpoint: 'virtnbdbackup.1', incremental: true, diskName: 'vda' });
    expect(inc.frames.some((f) => f.kind === 'zero')).toBe(true);
    expect(inc.metadata.compressed).toBe(extra.length > 0 ? 2 : false);
    const diffName = names.find((n) => /^vda\.diff\.[0-9]+\.data$/.test(n))!;
    const diff = indexSaveset(join(dir(), diffName));
    expect(diff.metadata).toMatchObject({ checkpointName: 'virtnbdbackup.3', parentCheckpoint: 'virtnbdbackup.2', incremental: true });
  });
});

test('copy backup: whole disks at this moment, no checkpoint touched, no .cpt', async () => {
  const dir = join(vm.dir, 'copy');
  const before = (await vm.dom.checkpointNames()).sort();
  await backupOk(['-l', 'copy', '-o', dir]);
  const shas = shadowShas(['vda', 'sda']);
  for (const dev of ['vda', 'sda']) expect((await chainSha(dir, dev)).sha).toBe(shas[dev]);
  expect((await vm.dom.checkpointNames()).sort()).toEqual(before);
  const names = readdirSync(dir);
  expect(names).toContain('vmconfig.copy.xml');
  expect(names.some((n) => n.endsWith('.cpt'))).toBe(false);
  expect(names.some((n) => n.startsWith('vdb.'))).toBe(false); // raw disk excluded without --raw
});

test('a second backup into a directory that is being written is refused; the target is untouched', async () => {
  const dir = join(vm.dir, 'chain-uncompressed');
  const before = readdirSync(dir).sort();
  const lock = lockTarget(dir); // what a running virtnbdbackup holds
  try {
    const r = await backup(['-l', 'inc', '-o', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/Another backup is running into target directory/);
  } finally {
    lock.release();
  }
  // only the refused run's log file is new
  const after = readdirSync(dir).sort().filter((n) => !before.includes(n));
  expect(after.every((n) => /^backup\.inc\.[0-9]{14}\.log$/.test(n))).toBe(true);
});

test('usage rules: full into a non-empty target, inc without a full, raw output with inc', async () => {
  const dir = join(vm.dir, 'chain-uncompressed');
  let r = await backup(['-l', 'full', '-o', dir]);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/Target directory already contains full or copy backup\./);
  r = await backup(['-l', 'inc', '-o', join(vm.dir, 'empty-target')]);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/No full backup found in target directory/);
  r = await backup(['-l', 'inc', '-t', 'raw', '-o', dir]);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/Stream format raw does not support incremental or differential backup\./);
});

test('zip archives on stdout (-o -): full + inc unpacked into one directory map to the disk at each point; only chain state in the cwd', async () => {
  const state = join(vm.dir, 'zip-state');
  const unpacked = join(vm.dir, 'zip-unpacked');
  mkdirSync(state);
  mkdirSync(unpacked);
  const zipRun = async (level: string, out: string): Promise<void> => {
    const r = await execa(BIN, ['-d', vm.name, '--nocolor', '-l', level, '-z', '-o', '-', '--socketfile', join(vm.dir, `zip.${level}.sock`), '--scratchdir', vm.dir], {
      reject: false,
      cwd: state,
      stdin: 'ignore',
      stdout: { file: out },
      timeout: 300_000,
    });
    if (r.exitCode !== 0) throw new Error(`zip ${level} exited ${r.exitCode}:\n${r.stderr}`);
  };
  await zipRun('full', join(vm.dir, 'full.zip'));
  const fullShas = shadowShas(['vda', 'sda']);
  await activity(9);
  await zipRun('inc', join(vm.dir, 'inc.zip'));
  const incShas = shadowShas(['vda', 'sda']);
  expect(readdirSync(state).sort()).toEqual(['checkpoints', `${vm.name}.cpt`].sort());
  for (const z of ['full.zip', 'inc.zip']) {
    const t = await execa('unzip', ['-t', join(vm.dir, z)], { reject: false });
    expect(t.exitCode).toBe(0);
    await execa('unzip', ['-o', '-q', '-d', unpacked, join(vm.dir, z)]);
  }
  const names = readdirSync(unpacked).sort();
  for (const n of ['vda.full.data', 'vda.full.data.chksum', 'vda.inc.virtnbdbackup.1.data', 'vmconfig.virtnbdbackup.1.xml', `${vm.name}.cpt`, 'checkpoints'])
    expect(names).toContain(n);
  expect(names.some((n) => /^backup\.inc\.[0-9]{14}\.log$/.test(n))).toBe(true);
  for (const dev of ['vda', 'sda']) {
    expect((await chainSha(unpacked, dev, 'virtnbdbackup.0')).sha).toBe(fullShas[dev]);
    expect((await chainSha(unpacked, dev)).sha).toBe(incShas[dev]);
  }
  // the .chksum entries are right
  const chk = readFileSync(join(unpacked, 'vda.inc.virtnbdbackup.1.data.chksum'), 'utf8');
  expect(chk).toBe(String(await adler32File(join(unpacked, 'vda.inc.virtnbdbackup.1.data'))));
});

const ORIGINAL_RESTORE = '/usr/bin/virtnbdrestore';
(existsSync(ORIGINAL_RESTORE) ? describe : describe.skip).each([
  ['uncompressed', [] as string[]],
  ['LZ4', ['-z']],
])("the original's virtnbdrestore (Debian 1.9.15) restores our %s backups", (label, extra) => {
  test('full and full + inc (data writes only: no zeroed ranges, which it cannot represent) equal the disk at each point', async () => {
    const dir = join(vm.dir, `compat-${label}`);
    await backupOk(['-l', 'full', '-o', dir, ...extra]);
    const full = vm.shadowSha('vda');
    const p = label === 'LZ4' ? 0x71 : 0x61;
    await vm.write('vda', 9 * MiB, 3 * MiB + 4 * KiB, p);
    await vm.write('vda', 50 * MiB, 64 * KiB, p + 1);
    await backupOk(['-l', 'inc', '-o', dir, ...extra]);
    const inc = vm.shadowSha('vda');
    expect(inc).not.toBe(full);
    for (const [files, want] of [
      [['vda.full.data'], full],
      [['vda.full.data', 'vda.inc.virtnbdbackup.1.data'], inc],
    ] as const) {
      const out = join(vm.dir, `compat-out-${label}-${files.length}`);
      const r = await execa(
        ORIGINAL_RESTORE,
        ['-i', dir, '-o', join(out, 'restore'), '--sequence', files.join(','), '-n', '-f', join(vm.dir, `compat-${files.length}.sock`), '-L', join(vm.dir, `compat-${label}-${files.length}.log`)],
        { reject: false, timeout: 120_000, all: true },
      );
      if (r.exitCode !== 0) throw new Error(`virtnbdrestore exited ${r.exitCode}:\n${r.all}`);
      expect(r.all).not.toMatch(/ERROR|CRITICAL|Traceback/);
      await execa('qemu-img', ['convert', '-O', 'raw', join(out, 'restore', 'vda'), join(out, 'vda.raw')]);
      expect(await fileSha(join(out, 'vda.raw'))).toBe(want);
    }
  });
});

const RESTORE = join(ROOT, 'bin', 'virtnbdrestore');

async function restoreCli(args: string[]): Promise<{ code: number | undefined; stdout: string; stderr: string }> {
  const r = await execa(RESTORE, ['--nocolor', '-n', '-L', join(vm.dir, 'restore.log'), ...args], { reject: false, stdin: 'ignore', timeout: 300_000 });
  return { code: r.exitCode, stdout: r.stdout, stderr: r.stderr };
}

async function rawSha(image: string): Promise<string> {
  const raw = `${image}.raw`;
  await execa('qemu-img', ['convert', '-O', 'raw', image, raw]);
  const sha = await fileSha(raw);
  rmSync(raw, { force: true });
  return sha;
}

describe.each([['uncompressed'], ['LZ4']])('virtnbdrestore of our %s chain', (label) => {
  test('every point, all disks: restored images equal the disk at that point; thin; dump and verify pass', async () => {
    const dir = join(vm.dir, `chain-${label}`);
    const points = chainPoints.get(label);
    expect(points).toBeDefined();
    for (const [i, p] of points!.entries()) {
      const out = join(vm.dir, `restore-${label}-${i}`);
      const diffPoint = p.until.startsWith('vda.');
      const r = await restoreCli(['-i', dir, '-o', out, '--until', p.until, '--json', ...(diffPoint ? ['-d', 'vda'] : [])]);
      if (r.code !== 0) throw new Error(`virtnbdrestore exited ${r.code}:\n${r.stderr}`);
      const summary = JSON.parse(r.stdout.trim().split('\n').pop()!) as { disks: Array<{ path: string; dataBytes: number; allocatedBytes: number }> };
      for (const dev of diffPoint ? ['vda'] : ['vda', 'sda']) {
        const image = join(out, `${dev}.qcow2`);
        expect([p.until, dev, await rawSha(image)]).toEqual([p.until, dev, p.shas[dev]]);
        // thin: the image occupies its data plus qcow2 metadata, never the zero or unallocated ranges
        const d = summary.disks.find((x) => x.path === image);
        expect(d).toBeDefined();
        expect(d!.allocatedBytes).toBeLessThanOrEqual(d!.dataBytes + 2 * MiB);
      }
      rmSync(out, { recursive: true, force: true });
    }
    const v = await restoreCli(['-i', dir, '-o', 'verify']);
    expect(v.code).toBe(0);
    const d = await restoreCli(['-i', dir, '-o', 'dump', '-d', 'vda']);
    expect(d.code).toBe(0);
    const entries = JSON.parse(d.stdout) as Array<{ diskName: string }>;
    expect(entries.length).toBe(points!.length);
    expect(entries.every((e) => e.diskName === 'vda')).toBe(true);
  });
});

test('damage: a flipped byte in a data file is reported by verify (exit 1, file named) and its restore fails cleanly', async () => {
  const src = join(vm.dir, 'chain-LZ4');
  const dir = join(vm.dir, 'damaged');
  mkdirSync(dir);
  for (const n of readdirSync(src)) if (!n.startsWith('backup.') && n !== 'checkpoints') copyFileSync(join(src, n), join(dir, n));
  const victim = join(dir, 'vda.inc.virtnbdbackup.1.data');
  const idx = indexSaveset(victim);
  const frame = idx.frames.find((f) => f.kind === 'data' && f.payloadSize > 64);
  expect(frame).toBeDefined();
  const off = (frame as { payloadOffset: number; payloadSize: number }).payloadOffset + 40;
  const buf = readFileSync(victim);
  buf[off] = buf[off]! ^ 0x10;
  writeFileSync(victim, buf);
  const v = await restoreCli(['-i', dir, '-o', 'verify']);
  expect(v.code).toBe(1);
  expect(v.stderr).toMatch(/vda\.inc\.virtnbdbackup\.1\.data/);
  const out = join(vm.dir, 'damaged-out');
  const r = await restoreCli(['-i', dir, '-o', out, '-d', 'vda']);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/vda\.inc\.virtnbdbackup\.1\.data/);
  expect(existsSync(out) ? readdirSync(out).filter((n) => n.includes('qcow2')) : []).toEqual([]);
});

test('restore -c -D: the defined domain starts and its disks are the restored images', async () => {
  const dir = join(vm.dir, 'chain-uncompressed');
  const out = join(vm.dir, 'restore-define');
  const name = `${vm.name}-r`;
  const r = await restoreCli(['-i', dir, '-o', out, '-c', '-D', '--name', name]);
  if (r.code !== 0) throw new Error(`virtnbdrestore -cD exited ${r.code}:\n${r.stderr}`);
  const dom = await vm.conn.lookupByName(name);
  try {
    chmodSync(out, 0o777);
    for (const n of readdirSync(out)) chmodSync(join(out, n), 0o666);
    await dom.create();
    const xml = await dom.xmlDesc(0);
    const sources = [...xml.matchAll(/<source file='([^']+)'/g)].map((m) => m[1]).sort();
    expect(sources).toEqual([join(out, 'sda.qcow2'), join(out, 'vda.qcow2')]);
    expect(xml).not.toContain(vm.dir + '/vda.qcow2');
  } finally {
    await dom.destroy().catch(() => undefined);
    await dom.undefine(2 | 16).catch(() => undefined);
  }
});
