/**
 * virtnbdbackup on a shut-off domain (BEHAVIOUR.md §4): a persistent TCG domain is backed up
 * online (full), written to, shut off; then an offline inc reads the changes from the qcow2's
 * persistent bitmap through qemu-nbd (Unix-time ident, D1), a full becomes a copy, auto on an
 * empty target is refused (D7), -s is refused, and -S starts the domain paused for a real full.
 * Every result is mapped and compared with the shadow copy.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jest } from '@jest/globals';
import { execa } from 'execa';
import { TestVm } from '../helpers/test-vm.js';
import { chainSha } from '../helpers/map-sha.js';
import { indexSaveset } from '../../src/saveset/reader.js';

jest.setTimeout(900_000);

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'virtnbdbackup');
const MiB = 1024 * 1024;

let vm: TestVm;

beforeAll(async () => {
  vm = await TestVm.create({ persistent: true, disks: [{ dev: 'vda', bus: 'virtio', format: 'qcow2', size: 64 * MiB }] });
});

afterAll(async () => {
  await vm?.cleanup();
});

async function backup(dir: string, extra: string[]): Promise<{ code: number | undefined; stderr: string }> {
  const r = await execa(BIN, ['-d', vm.name, '--nocolor', '-o', dir, '--socketfile', join(vm.dir, `nbd.${Date.now()}.sock`), '--scratchdir', vm.dir, ...extra], {
    reject: false,
    stdin: 'ignore',
    timeout: 300_000,
  });
  return { code: r.exitCode, stderr: r.stderr };
}

function expectCode(r: { code: number | undefined; stderr: string }, code: number): void {
  if (r.code !== code) throw new Error(`virtnbdbackup exited ${r.code}, expected ${code}:\n${r.stderr}`);
}

test('offline inc after an online full: changes from the persistent bitmap via qemu-nbd, Unix-time ident, chain state untouched', async () => {
  const dir = join(vm.dir, 'set');
  expectCode(await backup(dir, ['-l', 'full']), 0);
  const full = vm.shadowSha('vda');
  await vm.write('vda', 10 * MiB, 2 * MiB, 0x41);
  await vm.zero('vda', 1 * MiB, 1 * MiB);
  const changed = vm.shadowSha('vda');
  await vm.destroy();
  expect((await vm.dom.state()).name).toBe('shutoff');

  const cptBefore = readFileSync(join(dir, `${vm.name}.cpt`), 'utf8');
  const r = await backup(dir, ['-l', 'inc']);
  expectCode(r, 0);
  const inc = readdirSync(dir).find((n) => /^vda\.inc\.[0-9]+\.data$/.test(n));
  expect(inc).toBeDefined();
  const idx = indexSaveset(join(dir, inc!));
  expect(idx.metadata).toMatchObject({ checkpointName: 'virtnbdbackup.0', parentCheckpoint: 'virtnbdbackup.0', incremental: true });
  expect(idx.metadata.dataSize).toBeLessThanOrEqual(4 * MiB);
  expect(readFileSync(join(dir, `${vm.name}.cpt`), 'utf8')).toBe(cptBefore);
  expect((await chainSha(dir, 'vda', 'virtnbdbackup.0')).sha).toBe(full);
  expect((await chainSha(dir, 'vda')).sha).toBe(changed);
  // no qemu-nbd left behind
  const left = await execa('pgrep', ['-f', `qemu-nbd.*${vm.dir}`], { reject: false });
  expect(left.stdout.trim()).toBe('');
});

test('offline: full becomes copy (two warnings), auto into an empty target and -s are refused', async () => {
  const copyDir = join(vm.dir, 'offline-full');
  const r = await backup(copyDir, ['-l', 'full']);
  expectCode(r, 0);
  expect(r.stderr).toMatch(/WARNING .*Domain is offline, resetting backup options\./);
  expect(r.stderr).toMatch(/WARNING .*New Backup level: \[copy\]\./);
  expect(readdirSync(copyDir).filter((n) => n.endsWith('.data'))).toEqual(['vda.copy.data']);
  expect((await chainSha(copyDir, 'vda')).sha).toBe(vm.shadowSha('vda'));

  const a = await backup(join(vm.dir, 'offline-auto'), ['-l', 'auto']);
  expectCode(a, 1);
  expect(a.stderr).toMatch(/needs a running domain/);
  expect(readdirSync(join(vm.dir, 'offline-auto')).filter((n) => n.includes('.data'))).toEqual([]);

  const s = await backup(join(vm.dir, 'offline-s'), ['-l', 'full', '-s']);
  expectCode(s, 1);
  expect(s.stderr).toMatch(/Domain is offline: must be active for this function\./);
});

test('-S starts the domain paused for a real full with a checkpoint, and it is gone again afterwards', async () => {
  const dir = join(vm.dir, 'started');
  const r = await backup(dir, ['-l', 'full', '-S']);
  expectCode(r, 0);
  expect(r.stderr).toMatch(/Started domain in paused state/);
  expect(readFileSync(join(dir, `${vm.name}.cpt`), 'utf8')).toBe('["virtnbdbackup.0"]');
  expect((await chainSha(dir, 'vda')).sha).toBe(vm.shadowSha('vda'));
  expect((await vm.dom.state()).name).toBe('shutoff');
});
