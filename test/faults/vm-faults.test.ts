/**
 * Faults, point 3 (local): the VM destroyed (`virsh destroy`) in the middle of an online inc, and
 * the NBD connection cut in the middle of an offline inc (its qemu-nbd killed). "The middle" is
 * made exact with the pausing fault point `backup:mid-disk:pause` (src/util/fault-point.ts): the
 * run stops after its first piece, the test strikes, then lets it go on (SIGCONT). The changes are
 * larger than the reads a run keeps in flight (32 MiB), so the run still needs the server afterwards.
 * Each time: exit 1 with an error naming the cause, no data file under a final name, nothing left
 * behind; the next ordinary run succeeds without manual steps; every committed point maps
 * SHA-256-equal to its shadow copy.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { TestVm } from '../helpers/test-vm.js';
import { chainSha } from '../helpers/map-sha.js';
import { bin, expectExit, NOTHING_LEFT, runCmd, scopedProcesses, settledLeftovers, startCmd, waitStopped } from './fault-helpers.js';

jest.setTimeout(900_000);

const MiB = 1024 * 1024;
let vm: TestVm;
let dir = '';
let seq = 0;
const points: Array<{ cp: string; vda: string }> = [];
const figures = { faults: 0, refusedWithCommand: 0 };

beforeAll(async () => {
  vm = await TestVm.create({ persistent: true, disks: [{ dev: 'vda', bus: 'virtio', format: 'qcow2', size: 128 * MiB }] });
  dir = join(vm.dir, 'set');
});

afterAll(async () => {
  await vm?.cleanup();
  process.stderr.write(`vm-faults figures: ${JSON.stringify({ ...figures, points: points.length })}\n`);
});

function args(extra: string[]): string[] {
  return ['-d', vm.name, '--nocolor', '-o', dir, '--socketfile', join(vm.dir, `nbd.${++seq}.sock`), '--scratchdir', vm.dir, ...extra];
}

const cpt = (): string[] => JSON.parse(readFileSync(join(dir, `${vm.name}.cpt`), 'utf8')) as string[];
const finalData = (): string[] => readdirSync(dir).filter((n) => /\.data$/.test(n)).sort();
const nothingLeft = async (): Promise<void> => {
  expect(await settledLeftovers({ scopes: [vm.dir], socketsIn: [vm.dir], dom: vm.dom })).toEqual(NOTHING_LEFT);
};

/** An ordinary run that must succeed; the newest point then maps equal to the shadow. */
async function ordinary(level: string): Promise<string> {
  let r = await runCmd(bin('virtnbdbackup'), args(['-l', level]));
  if (r.code !== 0) {
    // a refusal must name the command that fixes it; that command is run as given
    const fix = /(?:end it with|Start it again with|Run): virtnbdbackup ([^\n]*?)\s*$/m.exec(r.stderr)?.[1]?.split(' ');
    if (fix === undefined) throw new Error(`the run after the fault failed without naming a command (exit ${r.code}):\n${r.stderr}`);
    figures.refusedWithCommand++;
    r = await runCmd(bin('virtnbdbackup'), [...fix, '--nocolor', '--socketfile', join(vm.dir, `nbd.${++seq}.sock`), '--scratchdir', vm.dir]);
  }
  expectExit(r, 0);
  expect((await chainSha(dir, 'vda')).sha).toBe(vm.shadowSha('vda'));
  const c = cpt();
  if (points.length === 0 || points[points.length - 1]!.cp !== c[c.length - 1]) points.push({ cp: c[c.length - 1]!, vda: vm.shadowSha('vda') });
  await nothingLeft();
  return r.stderr;
}

/** Starts `-l inc` stopped after its first piece; `strike` acts; the run goes on and must fail with `cause`. */
async function faultMidDisk(strike: () => Promise<void>, cause: RegExp): Promise<void> {
  const before = { cpt: cpt(), data: finalData() };
  const child = startCmd(bin('virtnbdbackup'), args(['-l', 'inc']), 'backup:mid-disk:pause');
  await waitStopped(child.pid!, 300_000).catch(async (e: Error) => {
    throw new Error(`${e.message}:\n${(await child).all}`);
  });
  await strike();
  process.kill(child.pid!, 'SIGCONT');
  const r = await child;
  figures.faults++;
  if (r.exitCode !== 1) throw new Error(`expected exit 1, got ${r.exitCode} ${r.signal}:\n${r.all}`);
  const errors = (r.all ?? '').split('\n').filter((l) => / (ERROR|CRITICAL) /.test(l));
  if (errors.length === 0 || !cause.test(errors[0]!)) throw new Error(`the first error does not name the cause ${cause}:\n${r.all}`);
  process.stderr.write(`vm-faults run: ${errors.join('\n  ')}\n`);
  expect({ cpt: cpt(), data: finalData() }).toEqual(before);
  await nothingLeft();
}

test('online full starts the chain', async () => {
  await ordinary('full');
});

test('VM destroyed mid-backup: exit 1 naming the cause; the next inc (domain off) succeeds, and again once it runs', async () => {
  await vm.write('vda', 4 * MiB, 48 * MiB, 0x51); // more than the reads in flight (32 MiB): the run needs the VM after the pause
  await faultMidDisk(() => vm.destroy(), /domain|NBD|connection|disconnected|EOF|shut ?off|not running/i);
  expect((await vm.dom.state()).name).toBe('shutoff');
  // domain off: an offline inc through qemu-nbd and the qcow2's bitmap
  await ordinary('inc');
  await vm.recreate();
  await vm.write('vda', 12 * MiB, 1 * MiB, 0x52);
  await ordinary('inc');
});

test('NBD connection cut mid-transfer (the offline qemu-nbd killed): exit 1 naming the connection; the next inc succeeds', async () => {
  await vm.write('vda', 60 * MiB, 48 * MiB, 0x53);
  await vm.destroy();
  const image = vm.imagePath('vda');
  await faultMidDisk(async () => {
    const servers = scopedProcesses([image]).filter((l) => l.includes('qemu-nbd'));
    expect(servers).toHaveLength(1);
    process.kill(Number(servers[0]!.split(':')[0]), 'SIGKILL');
  }, /NBD|connection|disconnected|EOF|server/i);
  await ordinary('inc');
  await vm.recreate();
  await ordinary('inc');
});

test('every committed point maps SHA-256-equal to its shadow copy', async () => {
  expect(points.length).toBeGreaterThanOrEqual(3);
  for (const p of points) expect([p.cp, (await chainSha(dir, 'vda', p.cp)).sha]).toEqual([p.cp, p.vda]);
  expect(existsSync(dir)).toBe(true);
});
