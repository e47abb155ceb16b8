/**
 * Checkpoint and failure scenarios of virtnbdbackup (BEHAVIOUR.md §3) against a real running TCG
 * domain: foreign checkpoint, -p estimate, --strict, transient domain (checkpoint metadata lost,
 * redefined from the checkpoint directory), lost bitmap (fallback full), a backup killed with
 * SIGKILL mid-run (the dead run's job ended, recovery), and after all of it every backup point still
 * maps to the disk content at that point (shadow copies, test/helpers/test-vm).
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
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
let dir = '';
const points: Array<{ until: string; vda: string; sda: string }> = [];

beforeAll(async () => {
  vm = await TestVm.create({
    disks: [
      { dev: 'vda', bus: 'virtio', format: 'qcow2', size: 256 * MiB },
      { dev: 'sda', bus: 'sata', format: 'qcow2', size: 32 * MiB },
    ],
  });
  dir = join(vm.dir, 'set');
});

afterAll(async () => {
  await vm?.cleanup();
});

function args(extra: string[]): string[] {
  return ['-d', vm.name, '--nocolor', '-o', dir, '--socketfile', join(vm.dir, `nbd.${Date.now()}.sock`), '--scratchdir', vm.dir, ...extra];
}

async function backup(extra: string[]): Promise<{ code: number | undefined; stdout: string; stderr: string }> {
  const r = await execa(BIN, args(extra), { reject: false, stdin: 'ignore', timeout: 300_000 });
  return { code: r.exitCode, stdout: r.stdout, stderr: r.stderr };
}

/** Checks the exit code, showing the run's log output when it differs. */
function expectCode(r: { code: number | undefined; stderr: string }, code: number): void {
  if (r.code !== code) throw new Error(`virtnbdbackup exited ${r.code}, expected ${code}:\n${r.stderr}`);
}

function record(until: string): void {
  points.push({ until, vda: vm.shadowSha('vda'), sda: vm.shadowSha('sda') });
}

const cpt = (): string[] => JSON.parse(readFileSync(join(dir, `${vm.name}.cpt`), 'utf8')) as string[];
const dataFiles = (): string[] => readdirSync(dir).filter((n) => n.includes('.data')).sort();

test('full backup starts the chain', async () => {
  await vm.write('vda', 8 * MiB, 2 * MiB, 0x31);
  const r = await backup(['-l', 'full']);
  expectCode(r, 0);
  // no guest agent: fsfreeze fails with a warning, the backup goes on
  expect(r.stderr).toMatch(/WARNING .*fsfreeze failed/);
  record('virtnbdbackup.0');
  expect(cpt()).toEqual(['virtnbdbackup.0']);
});

test('a foreign checkpoint makes inc refuse with the three lines, writing nothing', async () => {
  await vm.dom.checkpointCreateXML('<domaincheckpoint><name>manual-cp</name><disks><disk name="vda"/><disk name="sda" checkpoint="no"/></disks></domaincheckpoint>');
  const before = dataFiles();
  try {
    const r = await backup(['-l', 'inc']);
    expectCode(r, 1);
    expect(r.stderr).toMatch(/CRITICAL .*Foreign checkpoint found: \[manual-cp\]/);
    expect(r.stderr).toMatch(/This checkpoint has not been created by this utility\./);
    expect(dataFiles()).toEqual(before);
    expect(cpt()).toEqual(['virtnbdbackup.0']);
  } finally {
    await (await vm.dom.checkpointLookupByName('manual-cp')).delete();
  }
});

test('-p prints the estimate of the changes and changes nothing', async () => {
  await vm.write('vda', 20 * MiB, 3 * MiB, 0x32);
  await vm.write('sda', 1 * MiB, 1 * MiB, 0x33);
  const before = dataFiles();
  const names = (await vm.dom.checkpointNames()).sort();
  const r = await backup(['-l', 'inc', '-p']);
  expectCode(r, 0);
  const m = /Estimated checkpoint backup size: \[([0-9]+)\] Bytes/.exec(r.stderr);
  expect(m).not.toBeNull();
  expect(Number(m![1])).toBeGreaterThanOrEqual(4 * MiB);
  expect(dataFiles()).toEqual(before);
  expect((await vm.dom.checkpointNames()).sort()).toEqual(names);
});

test('--strict: a complete inc with warnings exits 2', async () => {
  const r = await backup(['-l', 'inc', '--strict']);
  expectCode(r, 2);
  expect(r.stderr).toMatch(/Warnings detected during backup operation, forcing exit code 2/);
  record('virtnbdbackup.1');
  expect(cpt()).toEqual(['virtnbdbackup.0', 'virtnbdbackup.1']);
});

test('transient domain: checkpoint metadata lost, redefined from the checkpoint directory, inc continues', async () => {
  await vm.recreate();
  expect(await vm.dom.checkpointNames()).toEqual([]);
  await vm.write('vda', 30 * MiB, 1 * MiB, 0x34);
  await vm.zero('vda', 8 * MiB, 1 * MiB);
  const r = await backup(['-l', 'inc']);
  expectCode(r, 0);
  record('virtnbdbackup.2');
  expect((await vm.dom.checkpointNames()).sort()).toEqual(['virtnbdbackup.0', 'virtnbdbackup.1', 'virtnbdbackup.2']);
  const inc = indexSaveset(join(dir, 'vda.inc.virtnbdbackup.2.data'));
  expect(inc.metadata).toMatchObject({ incremental: true, parentCheckpoint: 'virtnbdbackup.1' });
  // only the changes: 1 MiB data + 1 MiB zeroed, not the whole disk
  expect(inc.metadata.dataSize).toBeLessThanOrEqual(2 * MiB);
});

test('lost bitmap: the parent fails validation, the run falls back to a full (named inc) with a warning', async () => {
  await vm.removeBitmap('vda', 'virtnbdbackup.2');
  await vm.write('vda', 40 * MiB, 1 * MiB, 0x35);
  const r = await backup(['-l', 'inc']);
  expectCode(r, 0);
  expect(r.stderr).toMatch(/Checkpoint \[virtnbdbackup\.2\] is invalid, switching backup to full\./);
  record('virtnbdbackup.3');
  const f = indexSaveset(join(dir, 'vda.inc.virtnbdbackup.3.data'));
  expect(f.metadata).toMatchObject({ incremental: false, parentCheckpoint: '', checkpointName: 'virtnbdbackup.3' });
  expect(cpt()).toEqual(['virtnbdbackup.0', 'virtnbdbackup.1', 'virtnbdbackup.2', 'virtnbdbackup.3']);
});

test('SIGKILL mid-run: the next inc ends the dead run\'s job, recovers and the chain stays correct', async () => {
  await vm.write('vda', 64 * MiB, 160 * MiB, 0x36);
  const cptBefore = cpt();
  const child = execa(BIN, args(['-l', 'inc', '-z']), { reject: false, stdin: 'ignore' });
  const partial = join(dir, 'vda.inc.virtnbdbackup.4.data.partial');
  const deadline = Date.now() + 120_000;
  while (!existsSync(partial) && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 2));
  child.kill('SIGKILL');
  const res = await child;
  expect(res.signal).toBe('SIGKILL');
  expect(existsSync(partial)).toBe(true);
  expect(existsSync(join(dir, 'vda.inc.virtnbdbackup.4.data'))).toBe(false);
  expect(cpt()).toEqual(cptBefore);

  // The dead run's job is ended by the next run: its owner record (src/backup/stale-job.ts) names
  // a process that is gone. (A job whose owner lives is refused: test/faults/backup-kill.test.ts.)
  const r = await backup(['-l', 'inc']);
  expectCode(r, 0);
  expect(r.stderr).toMatch(/WARNING .*was left by virtnbdbackup pid [0-9]+, which is no longer running: ending it/);
  record('virtnbdbackup.4');
  const names = readdirSync(dir);
  expect(names.filter((n) => n.endsWith('.partial'))).toEqual([]);
  expect(names.some((n) => /^vda\.inc\.virtnbdbackup\.4\.data\.partial\.failed-[0-9]+$/.test(n) || /\.failed-[0-9]+$/.test(n))).toBe(true);
  expect(cpt()).toEqual([...cptBefore, 'virtnbdbackup.4']);
  expect(statSync(join(dir, 'vda.inc.virtnbdbackup.4.data')).size).toBeGreaterThan(0);
});

test('every backup point of the scenario chain maps to the disk content at that point', async () => {
  expect(points.map((p) => p.until)).toEqual(['virtnbdbackup.0', 'virtnbdbackup.1', 'virtnbdbackup.2', 'virtnbdbackup.3', 'virtnbdbackup.4']);
  for (const p of points) {
    expect(['vda', p.until, (await chainSha(dir, 'vda', p.until)).sha]).toEqual(['vda', p.until, p.vda]);
    expect(['sda', p.until, (await chainSha(dir, 'sda', p.until)).sha]).toEqual(['sda', p.until, p.sda]);
  }
  expect(new Set(points.map((p) => p.vda)).size).toBe(points.length);
});

test('-T above the estimate skips the inc (exit 0, no data file, chain unchanged)', async () => {
  await vm.write('sda', 3 * MiB, 64 * 1024, 0x37);
  const before = dataFiles();
  const r = await backup(['-l', 'inc', '-T', String(2 ** 40)]);
  expectCode(r, 0);
  expect(r.stderr).toMatch(/does not meet required threshold \[1099511627776\], skipping backup\./);
  expect(dataFiles()).toEqual(before);
  expect(cpt()).toHaveLength(5);
});

test('SIGTERM mid-run: exit 1, job aborted, its checkpoint removed, no partial file; the next inc (no sparse detection) still has every change', async () => {
  await vm.write('vda', 64 * MiB, 150 * MiB, 0x38);
  const cptBefore = cpt();
  const namesBefore = (await vm.dom.checkpointNames()).sort();
  const filesBefore = dataFiles();
  const child = execa(BIN, args(['-l', 'inc', '-z']), { reject: false, stdin: 'ignore', all: true });
  const partial = join(dir, `vda.inc.virtnbdbackup.${cptBefore.length}.data.partial`);
  const deadline = Date.now() + 120_000;
  while (!existsSync(partial) && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 2));
  expect(existsSync(partial)).toBe(true);
  child.kill('SIGTERM');
  const res = await child;
  expect([res.exitCode, res.all]).toEqual([1, expect.stringMatching(/Signal caught: SIGTERM/)]);
  expect((await vm.dom.jobInfo()).type).toBe(0); // JOB_TYPE.NONE: the job was aborted
  expect((await vm.dom.checkpointNames()).sort()).toEqual(namesBefore);
  expect(cpt()).toEqual(cptBefore);
  expect(dataFiles()).toEqual(filesBefore);

  const r = await backup(['-l', 'inc', '--no-sparse-detection']);
  expectCode(r, 0);
  const inc = indexSaveset(join(dir, `vda.inc.virtnbdbackup.${cptBefore.length}.data`));
  expect(inc.metadata.dataSize).toBeGreaterThanOrEqual(150 * MiB);
  expect(inc.frames.every((f) => f.kind === 'data')).toBe(true);
  expect((await chainSha(dir, 'vda')).sha).toBe(vm.shadowSha('vda'));
  expect((await chainSha(dir, 'sda')).sha).toBe(vm.shadowSha('sda'));
});

test('-s leaves the job and its NBD export running for other tools; -k ends it', async () => {
  const sock = join(vm.dir, 'startonly.sock');
  const r = await execa(BIN, ['-d', vm.name, '--nocolor', '-l', 'copy', '-o', join(vm.dir, 'startonly'), '-s', '--socketfile', sock, '--scratchdir', vm.dir], { reject: false });
  expectCode({ code: r.exitCode, stderr: r.stderr }, 0);
  expect((await vm.dom.jobInfo()).type).not.toBe(0);
  const size = await execa('nbdinfo', ['--size', `nbd+unix:///sda?socket=${sock}`]);
  expect(Number(size.stdout.trim())).toBe(32 * MiB);
  const k = await backup(['-k']);
  expectCode(k, 0);
  expect((await vm.dom.jobInfo()).type).toBe(0);
});

test('-t raw copy of one disk (-i): a plain image equal to the disk; other disks left out', async () => {
  const out = join(vm.dir, 'rawcopy');
  const r = await execa(BIN, ['-d', vm.name, '--nocolor', '-l', 'copy', '-t', 'raw', '-i', 'sda', '-o', out, '--socketfile', join(vm.dir, 'raw.sock'), '--scratchdir', vm.dir], { reject: false });
  expectCode({ code: r.exitCode, stderr: r.stderr }, 0);
  expect(readdirSync(out).filter((n) => n.includes('.data')).sort()).toEqual(['sda.copy.data']);
  const { fileSha } = await import('../helpers/map-sha.js');
  expect(await fileSha(join(out, 'sda.copy.data'))).toBe(vm.shadowSha('sda'));
  expect(statSync(join(out, 'sda.copy.data')).size).toBe(32 * MiB);
});
