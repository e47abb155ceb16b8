/**
 * Faults, point 2: ENOSPC on the target. The backup directory and the restore target live on a
 * small ext4 file system on a loop device (24 MiB, no reserved blocks), mounted in the test's
 * directory; a filler file (fallocate) leaves just so much free space that the run cannot finish.
 * Full, inc and `-z` inc backups and a virtnbdrestore each fail with exit 1 and an error naming
 * the cause, no file under a final name, nothing left behind; with the space back, the same
 * command succeeds; every committed point maps (and the last one restores) SHA-256-equal.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { execa } from 'execa';
import { TestVm } from '../helpers/test-vm.js';
import { chainSha, fileSha } from '../helpers/map-sha.js';
import { bin, expectExit, NOTHING_LEFT, runCmd, settledLeftovers, type RunResult } from './fault-helpers.js';

jest.setTimeout(900_000);

const MiB = 1024 * 1024;
let vm: TestVm;
let mnt = '';
let mntRestore = '';
const mounted: string[] = [];

/** A small ext4 (no reserved blocks) on a loop device, mounted in the VM's directory. */
async function smallFs(name: string, size: string): Promise<string> {
  const image = join(vm.dir, `${name}.ext4`);
  const m = join(vm.dir, name);
  mkdirSync(m);
  await execa('truncate', ['-s', size, image]);
  await execa('mkfs.ext4', ['-q', '-F', '-m', '0', image]);
  await execa('mount', ['-o', 'loop', image, m]);
  mounted.push(m);
  return m;
}
let dir = '';
let seq = 0;
const points: Array<{ cp: string; vda: string }> = [];
const figures = { faults: 0 };

beforeAll(async () => {
  vm = await TestVm.create({ disks: [{ dev: 'vda', bus: 'virtio', format: 'qcow2', size: 64 * MiB }] });
  mnt = await smallFs('target', '24M');
  mntRestore = await smallFs('restore', '32M');
  dir = join(mnt, 'set');
});

afterAll(async () => {
  for (const m of mounted) await execa('umount', [m], { reject: false }); // loop devices of mount -o loop autoclear
  await vm?.cleanup();
  process.stderr.write(`enospc figures: ${JSON.stringify({ ...figures, points: points.length })}\n`);
});

const filler = (fs = mnt): string => join(fs, 'filler');
const dropFiller = (fs = mnt): void => {
  rmSync(filler(fs), { force: true });
  rmSync(`${filler(fs)}.2`, { force: true });
};

/** Leaves about `bytes` free on the target file system. */
async function leaveFree(bytes: number, fs = mnt): Promise<void> {
  dropFiller(fs);
  const st = statfsSync(fs);
  const avail = st.bavail * st.bsize;
  if (avail > bytes + MiB) await execa('fallocate', ['-l', String(avail - bytes - MiB), filler(fs)]);
  // the last MiB in 4 KiB blocks, to the byte (fallocate of everything fails for want of metadata blocks)
  const st2 = statfsSync(fs);
  const rest = Math.floor((st2.bavail * st2.bsize - bytes) / 4096);
  if (rest > 0) await execa('dd', ['if=/dev/zero', `of=${filler(fs)}.2`, 'bs=4096', `count=${rest}`, 'status=none'], { reject: false });
}

function args(extra: string[]): string[] {
  return ['-d', vm.name, '--nocolor', '-o', dir, '--socketfile', join(vm.dir, `nbd.${++seq}.sock`), '--scratchdir', vm.dir, ...extra];
}

const cpt = (): string[] => (existsSync(join(dir, `${vm.name}.cpt`)) ? (JSON.parse(readFileSync(join(dir, `${vm.name}.cpt`), 'utf8')) as string[]) : []);
const finalData = (): string[] => (existsSync(dir) ? readdirSync(dir).filter((n) => /\.data$/.test(n)).sort() : []);

/** Exit 1, the cause named, the first ERROR line names it (one clear message), nothing left. */
async function expectEnospc(r: RunResult): Promise<void> {
  figures.faults++;
  if (r.code !== 1) throw new Error(`expected exit 1, got ${r.code} ${r.signal}:\n${r.stderr}`);
  const errors = r.stderr.split('\n').filter((l) => / (ERROR|CRITICAL) /.test(l));
  expect(errors.length).toBeGreaterThan(0);
  process.stderr.write(`enospc run: ${errors.join('\n  ')}\n`);
  if (!/no space left on device/i.test(errors[0]!)) throw new Error(`the first error does not name the cause:\n${r.stderr}`);
  expect(await settledLeftovers({ scopes: [vm.dir], socketsIn: [vm.dir], dom: vm.dom, own: [...mounted, ...mounted.map((m) => `${m}.ext4`)] })).toEqual(NOTHING_LEFT);
}

async function backupOk(extra: string[]): Promise<void> {
  dropFiller();
  const r = await runCmd(bin('virtnbdbackup'), args(extra));
  expectExit(r, 0);
  const c = cpt();
  points.push({ cp: c[c.length - 1]!, vda: vm.shadowSha('vda') });
  expect(await settledLeftovers({ scopes: [vm.dir], socketsIn: [vm.dir], dom: vm.dom, own: [...mounted, ...mounted.map((m) => `${m}.ext4`)] })).toEqual(NOTHING_LEFT);
}

test('full: the target fills up mid-transfer → exit 1 naming ENOSPC, no data file, no checkpoint; with space the full succeeds', async () => {
  mkdirSync(dir);
  await leaveFree(2 * MiB); // the full holds ~8 MiB of data
  const r = await runCmd(bin('virtnbdbackup'), args(['-l', 'full']));
  await expectEnospc(r);
  expect(finalData()).toEqual([]);
  expect(cpt()).toEqual([]);
  expect(await vm.dom.checkpointNames()).toEqual([]);
  await backupOk(['-l', 'full']);
});

test('inc: ENOSPC → exit 1, .cpt unchanged, no data file of the run; the next inc succeeds', async () => {
  await vm.write('vda', 20 * MiB, 6 * MiB, 0x61);
  const before = { cpt: cpt(), data: finalData() };
  await leaveFree(1 * MiB);
  await expectEnospc(await runCmd(bin('virtnbdbackup'), args(['-l', 'inc'])));
  expect({ cpt: cpt(), data: finalData() }).toEqual(before);
  await backupOk(['-l', 'inc']);
});

test('-z inc: ENOSPC with compression → exit 1, nothing of the run kept; the next -z inc succeeds', async () => {
  await vm.write('vda', 40 * MiB, 4 * MiB, 0x62);
  const before = { cpt: cpt(), data: finalData() };
  await leaveFree(0);
  await expectEnospc(await runCmd(bin('virtnbdbackup'), args(['-l', 'inc', '-z'])));
  expect({ cpt: cpt(), data: finalData() }).toEqual(before);
  await backupOk(['-l', 'inc', '-z']);
});

test('virtnbdrestore onto a full target: exit 1 naming ENOSPC, no image under its final name; with space it restores equal', async () => {
  const out = join(mntRestore, 'out');
  await leaveFree(2 * MiB, mntRestore);
  const restore = (): Promise<RunResult> => runCmd(bin('virtnbdrestore'), ['--nocolor', '-n', '-L', join(vm.dir, `restore.${++seq}.log`), '-i', dir, '-o', out]);
  const r = await restore();
  await expectEnospc(r);
  expect(existsSync(join(out, 'vda.qcow2'))).toBe(false);
  dropFiller(mntRestore);
  // everything the failed run left in the output directory is gone or harmless for the next run
  const r2 = await restore();
  expectExit(r2, 0);
  const raw = join(vm.dir, 'vda.restored.raw');
  await execa('qemu-img', ['convert', '-O', 'raw', join(out, 'vda.qcow2'), raw]);
  expect(await fileSha(raw)).toBe(points[points.length - 1]!.vda);
  rmSync(raw);
});

test('every committed point maps SHA-256-equal to its shadow copy', async () => {
  expect(points.map((p) => p.cp)).toEqual(['virtnbdbackup.0', 'virtnbdbackup.1', 'virtnbdbackup.2']);
  for (const p of points) expect([p.cp, (await chainSha(dir, 'vda', p.cp)).sha]).toEqual([p.cp, p.vda]);
});
