/**
 * Independent chains of one VM (`virtnbdbackup --chain NAME`) on a real running TCG domain with
 * shadow copies (test/helpers/test-vm): a `daily` and a `weekly` chain in two directories,
 * interleaved over 6 runs with guest writes between them; every point of both chains maps (our
 * plugin) to the shadow of that moment. Then a full of `daily` into a new directory (which deletes
 * the daily checkpoints only) and an inc of `weekly` are still correct; then virtnbdprune on the
 * weekly directory and one more weekly inc. Without --chain the names stay the original's
 * (tested by every other backup test).
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jest } from '@jest/globals';
import { execa } from 'execa';
import { TestVm } from '../helpers/test-vm.js';
import { chainSha } from '../helpers/map-sha.js';
import { readSavesetMetadata } from '../../src/saveset/reader.js';

jest.setTimeout(900_000);

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BACKUP = join(ROOT, 'bin', 'virtnbdbackup');
const PRUNE = join(ROOT, 'bin', 'virtnbdprune');
const MiB = 1024 * 1024;
const KiB = 1024;

let vm: TestVm;
beforeAll(async () => {
  if (!existsSync(join(ROOT, 'dist', 'src', 'cli', 'virtnbdprune.js'))) throw new Error('dist/ is missing: run npm run build:ts');
  vm = await TestVm.create({ disks: [{ dev: 'vda', bus: 'virtio', format: 'qcow2', size: 32 * MiB }] });
});
afterAll(async () => {
  await vm?.cleanup();
});

async function backup(dir: string, level: string, chain: string, fault?: string): Promise<string> {
  const r = await execa(
    BACKUP,
    ['-d', vm.name, '-l', level, '-o', dir, '--chain', chain, '--nocolor', '--socketfile', join(vm.dir, `nbd.${Date.now()}.sock`), '--scratchdir', vm.dir],
    { reject: false, stdin: 'ignore', timeout: 300_000, env: fault ? { ...process.env, VIRTNBD_FAULT: fault } : process.env },
  );
  if (fault !== undefined) {
    expect(r.signal).toBe('SIGKILL');
    return r.stderr;
  }
  if (r.exitCode !== 0) throw new Error(`virtnbdbackup -l ${level} --chain ${chain} exited ${r.exitCode}:\n${r.stderr}`);
  return r.stderr;
}

let round = 0;
async function activity(): Promise<void> {
  round++;
  await vm.write('vda', (2 + round) * MiB + 8 * KiB, 512 * KiB + 512, 0x60 + round);
  await vm.write('vda', 24 * MiB + round * 64 * KiB, 4 * KiB, 0x80 + round);
  await vm.zero('vda', 1 * MiB + round * 64 * KiB, 64 * KiB);
}

/** point (checkpoint name) → shadow SHA-256, per directory. */
const points = new Map<string, Map<string, string>>();
function record(dir: string, cp: string): void {
  const m = points.get(dir) ?? new Map<string, string>();
  m.set(cp, vm.shadowSha('vda'));
  points.set(dir, m);
}

async function checkAll(dir: string): Promise<void> {
  for (const [cp, sha] of points.get(dir) ?? []) expect([dir, cp, (await chainSha(dir, 'vda', cp)).sha]).toEqual([dir, cp, sha]);
}

test('daily and weekly chains interleaved; a full in one and an inc in the other stay correct; prune per chain', async () => {
  const daily = join(vm.dir, 'daily');
  const weekly = join(vm.dir, 'weekly');
  const plan: [string, string, string, string][] = [
    [daily, 'full', 'daily', 'virtnbdbackup.daily.0'],
    [weekly, 'full', 'weekly', 'virtnbdbackup.weekly.0'],
    [daily, 'inc', 'daily', 'virtnbdbackup.daily.1'],
    [weekly, 'auto', 'weekly', 'virtnbdbackup.weekly.1'],
    [daily, 'auto', 'daily', 'virtnbdbackup.daily.2'],
    [weekly, 'inc', 'weekly', 'virtnbdbackup.weekly.2'],
  ];
  for (const [dir, level, chain, cp] of plan) {
    await backup(dir, level, chain);
    record(dir, cp);
    await activity();
  }
  expect(new Set([...points.get(daily)!.values(), ...points.get(weekly)!.values()]).size).toBe(6);
  await checkAll(daily);
  await checkAll(weekly);
  // names: the chain's own prefix everywhere
  expect(readFileSync(join(weekly, `${vm.name}.cpt`), 'utf8')).toBe('["virtnbdbackup.weekly.0", "virtnbdbackup.weekly.1", "virtnbdbackup.weekly.2"]');
  expect(readdirSync(join(daily, 'checkpoints')).sort()).toEqual(['virtnbdbackup.daily.0.xml', 'virtnbdbackup.daily.1.xml', 'virtnbdbackup.daily.2.xml']);
  expect(readSavesetMetadata(join(weekly, 'vda.inc.virtnbdbackup.weekly.2.data')).metadata).toMatchObject({
    checkpointName: 'virtnbdbackup.weekly.2',
    parentCheckpoint: 'virtnbdbackup.weekly.1',
  });
  expect((await vm.dom.checkpointNames()).sort()).toEqual([
    'virtnbdbackup.daily.0', 'virtnbdbackup.daily.1', 'virtnbdbackup.daily.2',
    'virtnbdbackup.weekly.0', 'virtnbdbackup.weekly.1', 'virtnbdbackup.weekly.2',
  ]);

  // A new daily chain (full): the daily checkpoints go, the weekly ones stay and keep tracking.
  const daily2 = join(vm.dir, 'daily2');
  await backup(daily2, 'full', 'daily');
  record(daily2, 'virtnbdbackup.daily.0');
  expect((await vm.dom.checkpointNames()).sort()).toEqual([
    'virtnbdbackup.daily.0', 'virtnbdbackup.weekly.0', 'virtnbdbackup.weekly.1', 'virtnbdbackup.weekly.2',
  ]);
  await activity();
  await backup(weekly, 'inc', 'weekly');
  record(weekly, 'virtnbdbackup.weekly.3');
  await activity();
  await backup(daily2, 'inc', 'daily');
  record(daily2, 'virtnbdbackup.daily.1');
  await checkAll(weekly);
  await checkAll(daily2);
  await checkAll(daily); // the old daily directory still restores (its checkpoints are gone, its data is not)

  // Retention per chain: prune the weekly directory to 2 points, then continue it.
  const p = await execa(PRUNE, ['-i', weekly, '--keep-last', '2', '--json', '--nocolor', '-L', join(vm.dir, 'prune.log')], { reject: false });
  if (p.exitCode !== 0) throw new Error(p.stderr);
  expect(JSON.parse(p.stdout)).toMatchObject({ cut: 'virtnbdbackup.weekly.2', kept: ['virtnbdbackup.weekly.2', 'virtnbdbackup.weekly.3'] });
  points.get(weekly)!.delete('virtnbdbackup.weekly.0');
  points.get(weekly)!.delete('virtnbdbackup.weekly.1');
  await activity();
  await backup(weekly, 'auto', 'weekly');
  record(weekly, 'virtnbdbackup.weekly.4');
  await checkAll(weekly);
  expect(readdirSync(weekly).filter((n) => n.endsWith('.data')).sort()).toEqual([
    'vda.full.data', 'vda.inc.virtnbdbackup.weekly.3.data', 'vda.inc.virtnbdbackup.weekly.4.data',
  ]);

  // The transient domain loses its checkpoint metadata: each chain redefines its own from its
  // checkpoints/ directory (libvirt recorded parents across chains) and continues.
  await vm.recreate();
  expect(await vm.dom.checkpointNames()).toEqual([]);
  await activity();
  const out = await backup(weekly, 'inc', 'weekly');
  expect(out).not.toMatch(/switching backup to full/);
  record(weekly, 'virtnbdbackup.weekly.5');
  await activity();
  await backup(daily2, 'inc', 'daily');
  record(daily2, 'virtnbdbackup.daily.2');
  await checkAll(weekly);
  await checkAll(daily2);
  expect(readSavesetMetadata(join(daily2, 'vda.inc.virtnbdbackup.daily.2.data')).metadata).toMatchObject({ incremental: true, parentCheckpoint: 'virtnbdbackup.daily.1' });

  // A weekly run killed after its data (no .cpt entry yet): the next weekly run recovers its own
  // chain (stale job ended, stale checkpoint virtnbdbackup.weekly.6 deleted, files moved aside);
  // the daily chain is not touched.
  await activity();
  await backup(weekly, 'inc', 'weekly', 'backup:after-data');
  const recovered = await backup(weekly, 'inc', 'weekly');
  expect(recovered).toMatch(/WARNING/);
  record(weekly, 'virtnbdbackup.weekly.6');
  expect((await vm.dom.checkpointNames()).filter((n) => n.includes('daily')).sort()).toEqual(['virtnbdbackup.daily.0', 'virtnbdbackup.daily.1', 'virtnbdbackup.daily.2']);
  expect(readFileSync(join(weekly, `${vm.name}.cpt`), 'utf8')).toMatch(/"virtnbdbackup\.weekly\.5", "virtnbdbackup\.weekly\.6"\]$/);
  await checkAll(weekly);
  await activity();
  await backup(daily2, 'inc', 'daily');
  record(daily2, 'virtnbdbackup.daily.3');
  await checkAll(daily2);
});

test('an invalid chain name is a usage error (exit 2)', async () => {
  const r = await execa(BACKUP, ['-d', vm.name, '-l', 'full', '-o', join(vm.dir, 'bad'), '--chain', '1bad/..'], { reject: false });
  expect(r.exitCode).toBe(2);
  expect(r.stderr).toMatch(/--chain: invalid chain name/);
});
