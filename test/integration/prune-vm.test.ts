/**
 * virtnbdprune on a chain of a real running TCG domain (two qcow2 disks, LZ4), with guest writes
 * mirrored into shadow copies (test/helpers/test-vm): full + 5 incrementals, prune to the newest
 * 2 points — killed (SIGKILL) at two steps first, every listed point checked against its shadow
 * after each kill — then `virtnbdbackup -l inc` continues the chain on the running VM and every
 * remaining point (mapped through our plugin) equals the shadow taken at that point; `-o verify`
 * passes; libvirt and `.cpt` were not touched by the prune.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jest } from '@jest/globals';
import { execa } from 'execa';
import { TestVm } from '../helpers/test-vm.js';
import { chainSha } from '../helpers/map-sha.js';
import { discoverBackupDir } from '../../src/chain/discover.js';
import { availablePoints } from '../../src/chain/order.js';
import { readSavesetMetadata } from '../../src/saveset/reader.js';

jest.setTimeout(900_000);

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BACKUP = join(ROOT, 'bin', 'virtnbdbackup');
const PRUNE = join(ROOT, 'bin', 'virtnbdprune');
const RESTORE = join(ROOT, 'bin', 'virtnbdrestore');
const MiB = 1024 * 1024;
const KiB = 1024;
const DISKS = ['vda', 'sda'];

let vm: TestVm;
beforeAll(async () => {
  for (const p of [join(ROOT, 'dist', 'src', 'cli', 'virtnbdprune.js'), join(ROOT, 'build', 'Release', 'virtnbd_native.node')]) {
    if (!existsSync(p)) throw new Error(`${p} is missing: run npm run build first`);
  }
  vm = await TestVm.create({
    disks: [
      { dev: 'vda', bus: 'virtio', format: 'qcow2', size: 32 * MiB },
      { dev: 'sda', bus: 'sata', format: 'qcow2', size: 16 * MiB },
    ],
  });
});
afterAll(async () => {
  await vm?.cleanup();
});

async function backup(dir: string, level: string): Promise<void> {
  const r = await execa(BACKUP, ['-d', vm.name, '-l', level, '-o', dir, '-z', '--nocolor', '--socketfile', join(vm.dir, `nbd.${Date.now()}.sock`), '--scratchdir', vm.dir], {
    reject: false,
    stdin: 'ignore',
    timeout: 300_000,
  });
  if (r.exitCode !== 0) throw new Error(`virtnbdbackup -l ${level} exited ${r.exitCode}:\n${r.stderr}`);
}

async function prune(dir: string, args: string[], fault?: string) {
  return execa(PRUNE, ['-i', dir, '--nocolor', '-L', join(vm.dir, 'prune.log'), ...args], {
    reject: false,
    timeout: 300_000,
    env: fault ? { ...process.env, VIRTNBD_FAULT: fault } : process.env,
  });
}

/** Guest writes between two backups (data, zeroes, a discard) on both disks. */
async function activity(round: number): Promise<void> {
  const p = 0x40 + round;
  await vm.write('vda', (2 + round) * MiB + 4 * KiB, 768 * KiB + 512, p);
  await vm.write('vda', 20 * MiB + round * 64 * KiB, 4 * KiB, p + 1);
  await vm.zero('vda', 1 * MiB + round * 64 * KiB, 64 * KiB);
  if (round > 0) await vm.discard('vda', (2 + round - 1) * MiB, 64 * KiB);
  await vm.write('sda', round * 512 * KiB, 128 * KiB, p + 2);
}

/** checkpoint → shadow SHA-256 per disk. */
const shas = new Map<string, Record<string, string>>();
const record = (cp: string): void => void shas.set(cp, Object.fromEntries(DISKS.map((d) => [d, vm.shadowSha(d)])));

/** Every point still listed for each disk maps to the shadow of that point; returns them. */
async function checkListed(dir: string): Promise<string[]> {
  const set = discoverBackupDir(dir);
  let listed: string[] = [];
  for (const d of DISKS) {
    listed = availablePoints(d, set.disks.get(d) ?? []);
    for (const cp of listed) expect([d, cp, (await chainSha(dir, d, cp)).sha]).toEqual([d, cp, shas.get(cp)?.[d]]);
  }
  return listed;
}

test('full + 5 incs, prune to 2 (killed twice on the way), inc continues; every point = shadow', async () => {
  const dir = join(vm.dir, 'chain');
  await backup(dir, 'full');
  record('virtnbdbackup.0');
  for (let i = 1; i <= 5; i++) {
    await activity(i);
    await backup(dir, 'inc');
    record(`virtnbdbackup.${i}`);
  }
  expect(new Set([...shas.values()].map((s) => s.vda)).size).toBe(6); // every point differs
  const cptBefore = readFileSync(join(dir, `${vm.name}.cpt`), 'utf8');
  const libvirtBefore = (await vm.dom.checkpointNames()).sort();

  // Killed after the first disk's new base replaced its inc: both chains resolvable.
  const k1 = await prune(dir, ['--keep-last', '2'], 'prune:base-switched');
  expect(k1.signal).toBe('SIGKILL');
  expect(await checkListed(dir)).toHaveLength(6);
  // Resumed and killed again in the middle of the removals.
  const k2 = await prune(dir, ['--keep-last', '2'], 'prune:removed-one@3');
  expect(k2.signal).toBe('SIGKILL');
  await checkListed(dir);
  const r = await prune(dir, ['--keep-last', '2', '--json']);
  if (r.exitCode !== 0) throw new Error(r.stderr);
  const s = JSON.parse(r.stdout) as Record<string, unknown>;
  expect(s).toMatchObject({ resumed: 'virtnbdbackup.4', kept: ['virtnbdbackup.4', 'virtnbdbackup.5'] });
  expect(s.cut).toBeUndefined(); // the resumed prune was all there was to do
  expect(await checkListed(dir)).toEqual(['virtnbdbackup.4', 'virtnbdbackup.5']);
  for (const d of DISKS) {
    expect(readSavesetMetadata(join(dir, `${d}.full.data`)).metadata).toMatchObject({ checkpointName: 'virtnbdbackup.4', incremental: false, compressed: 2 });
  }
  expect(readdirSync(dir).filter((n) => /inc\.virtnbdbackup\.[0-4]\.|partial|journal/.test(n))).toEqual([]);
  // the VM and the chain state are untouched
  expect(readFileSync(join(dir, `${vm.name}.cpt`), 'utf8')).toBe(cptBefore);
  expect((await vm.dom.checkpointNames()).sort()).toEqual(libvirtBefore);

  // The chain continues from the newest checkpoint.
  await activity(6);
  await backup(dir, 'inc');
  record('virtnbdbackup.6');
  expect(readSavesetMetadata(join(dir, 'vda.inc.virtnbdbackup.6.data')).metadata.parentCheckpoint).toBe('virtnbdbackup.5');
  expect(await checkListed(dir)).toEqual(['virtnbdbackup.4', 'virtnbdbackup.5', 'virtnbdbackup.6']);
  const v = await execa(RESTORE, ['-i', dir, '-o', 'verify', '--nocolor', '-L', join(vm.dir, 'verify.log')], { reject: false });
  expect(v.exitCode).toBe(0);
  expect(v.stderr).toMatch(/ OK, 0 with problems, 0 without a checksum to compare/);

  // Prune again, down to the newest point: a full of .6.
  const r2 = await prune(dir, ['--keep-last', '1', '--json']);
  expect(JSON.parse(r2.stdout)).toMatchObject({ cut: 'virtnbdbackup.6' });
  expect(await checkListed(dir)).toEqual(['virtnbdbackup.6']);
});
