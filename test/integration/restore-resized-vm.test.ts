/**
 * A disk resized on a running VM between backups (issue 4), end to end with libvirt/qemu: a TCG
 * test VM (test/helpers/test-vm.ts) with one 16 MiB qcow2 disk; full backup, `virsh blockresize`
 * to 24 MiB plus guest writes in the new area, inc; shrink to 12 MiB plus a write, inc; grow to
 * 20 MiB (the area [12,20) MiB had data before the shrink and must now read as zeros), inc.
 * Every point restored with the real command (`virtnbdrestore --until`) must have the point's
 * size and content (SHA-256 of the guest-visible shadow at backup time).
 *
 * It also records what qemu 7.2's dirty bitmap does across a resize: the saved size of each inc
 * is checked to be only what the guest wrote (the grown area is not marked dirty, the shrink drops
 * the bits beyond the end), so the restore is right only because the resolver drops older data
 * beyond a later, smaller size.
 */
import { existsSync, readdirSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jest } from '@jest/globals';
import { execa } from 'execa';
import { TestVm, TEST_VM_URI } from '../helpers/test-vm.js';
import { indexSaveset } from '../../src/saveset/reader.js';
import { fileSha } from '../helpers/map-sha.js';

jest.setTimeout(900_000);

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BACKUP = join(ROOT, 'bin', 'virtnbdbackup');
const RESTORE = join(ROOT, 'bin', 'virtnbdrestore');
const MiB = 1024 * 1024;

let vm: TestVm;

beforeAll(async () => {
  for (const p of [join(ROOT, 'dist', 'src', 'cli', 'virtnbdbackup.js'), join(ROOT, 'build', 'Release', 'virtnbd_native.node')]) {
    if (!existsSync(p)) throw new Error(`${p} is missing: run npm run build first`);
  }
  vm = await TestVm.create({ disks: [{ dev: 'vda', bus: 'virtio', format: 'qcow2', size: 16 * MiB }] });
});

afterAll(async () => {
  await vm?.cleanup();
});

async function backup(dir: string, level: string): Promise<void> {
  const r = await execa(BACKUP, ['-d', vm.name, '--nocolor', '-l', level, '-o', dir, '--socketfile', join(vm.dir, `nbd.${Date.now()}.sock`), '--scratchdir', vm.dir], {
    reject: false,
    stdin: 'ignore',
    timeout: 300_000,
  });
  if (r.exitCode !== 0) throw new Error(`virtnbdbackup -l ${level} exited ${r.exitCode}:\n${r.stderr}`);
}

/** virsh blockresize, then the harness' idea of the disk (shadow and spec) follows. */
async function resize(size: number): Promise<void> {
  const r = await execa('virsh', ['-c', TEST_VM_URI, 'blockresize', vm.name, vm.imagePath('vda'), `${size}B`], { reject: false, all: true });
  if (r.exitCode !== 0) throw new Error(`virsh blockresize exited ${r.exitCode}: ${r.all}`);
  truncateSync(vm.shadowPath('vda'), size);
  (vm.spec('vda') as { size: number }).size = size;
}

async function restoredSha(dir: string, until: string | undefined, out: string): Promise<{ sha: string; size: number }> {
  const args = [RESTORE, '-i', dir, '-o', out, '-n', '-L', join(out, '..', `${until ?? 'newest'}.log`)];
  if (until) args.push('--until', until);
  const r = await execa(process.execPath, args, { reject: false, all: true, timeout: 120_000 });
  if (r.exitCode !== 0) throw new Error(`virtnbdrestore exited ${r.exitCode}:\n${r.all}`);
  const image = join(out, readdirSync(out).find((n) => n.startsWith('vda'))!);
  const info = JSON.parse((await execa('qemu-img', ['info', '--output', 'json', image])).stdout) as { 'virtual-size': number };
  const raw = join(out, 'check.raw');
  await execa('qemu-img', ['convert', '-O', 'raw', image, raw]);
  return { sha: await fileSha(raw), size: info['virtual-size'] };
}

test('grow, shrink, grow between backups: every point restores with its size and content', async () => {
  const dir = join(vm.dir, 'set');
  const points: { until: string; size: number; sha: string }[] = [];
  await vm.write('vda', 2 * MiB, 1 * MiB, 0x41);
  await vm.write('vda', 14 * MiB, 2 * MiB, 0x42); // up to the end of the 16 MiB disk
  await backup(dir, 'full');
  points.push({ until: 'virtnbdbackup.0', size: 16 * MiB, sha: vm.shadowSha('vda') });

  await resize(24 * MiB);
  await vm.write('vda', 20 * MiB, 1 * MiB, 0x43);
  await backup(dir, 'inc');
  points.push({ until: 'virtnbdbackup.1', size: 24 * MiB, sha: vm.shadowSha('vda') });

  await resize(12 * MiB);
  await vm.write('vda', 4 * MiB, 64 * 1024, 0x44);
  await backup(dir, 'inc');
  points.push({ until: 'virtnbdbackup.2', size: 12 * MiB, sha: vm.shadowSha('vda') });

  await resize(20 * MiB);
  await vm.write('vda', 5 * MiB, 64 * 1024, 0x45);
  await backup(dir, 'inc');
  points.push({ until: 'virtnbdbackup.3', size: 20 * MiB, sha: vm.shadowSha('vda') });

  // The harness' shadow is what the guest sees (grown areas read as zeros on qcow2).
  expect(await vm.imageSha('vda')).toBe(vm.shadowSha('vda'));

  // What the backups recorded: metadata sizes, and data only where the guest wrote.
  const meta = (name: string): { virtualSize: number; dataSize: number } => indexSaveset(join(dir, name)).metadata;
  expect(meta('vda.full.data').virtualSize).toBe(16 * MiB);
  expect(meta('vda.inc.virtnbdbackup.1.data')).toMatchObject({ virtualSize: 24 * MiB, dataSize: 1 * MiB });
  expect(meta('vda.inc.virtnbdbackup.2.data')).toMatchObject({ virtualSize: 12 * MiB, dataSize: 64 * 1024 });
  expect(meta('vda.inc.virtnbdbackup.3.data')).toMatchObject({ virtualSize: 20 * MiB, dataSize: 64 * 1024 });

  for (const [i, p] of points.entries()) {
    const out = join(vm.dir, `out-${i}`);
    const got = await restoredSha(dir, i === points.length - 1 ? undefined : p.until, out);
    expect([p.until, got.size, got.sha]).toEqual([p.until, p.size, p.sha]);
  }
});
