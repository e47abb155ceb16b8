/**
 * Boot from backup, migrate back to storage, kept overlays (issue 5) — all real: libvirtd + qemu
 * (TCG) running a tiny Debian-kernel + busybox guest (src/devtools/boot-guest.ts) whose init
 * prints `VIRTNBD-MARKER <marker> BOOT <n>` to its serial console and counts its boots on its
 * disk; backups made by our real `virtnbdbackup` of the running guest; `virtnbdmap --boot`
 * spawned as a user would run it.
 *
 * The source guest boots once (marker A, boot 1), is backed up (full), its marker is changed to
 * B on the running disk (qemu-io pattern write, so the dirty bitmap sees it), then backed up
 * again (inc) and as a compressed copy. Each boot from a point must print that point's marker
 * and boot number 2 (the boot count written at boot 1 is in the backup); the migrated domain,
 * restarted from its new images, prints boot 3 (the writes made while it ran from the backup
 * were kept). The backup files must be byte-identical afterwards, and nothing may be left over:
 * no domain, no nbdkit, no run directory.
 */
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jest } from '@jest/globals';
import { execa, type ResultPromise } from 'execa';
import { watchJsonLine } from '../helpers/json-line.js';
import { guestDomainXml, markersIn, waitForMarker, type BootFiles } from '../../src/devtools/boot-guest.js';
import { createDemoVm, setMarker } from '../../src/devtools/demo-vm.js';

jest.setTimeout(900_000);

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = (c: string): string => join(ROOT, 'bin', c);
const URI = 'qemu:///system';
const SRC = `vnbd-boot-src-${process.pid}`;
const BOOT_TIMEOUT = 240_000;

let work = '';
let boot: BootFiles;
let srcDisk = '';
let setInc = ''; // full + inc, plain
let setZ = ''; // compressed copy
let sums = new Map<string, string>();

const virsh = (...args: string[]) => execa('virsh', ['-c', URI, ...args], { reject: false });

function sha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function setSums(): Map<string, string> {
  const m = new Map<string, string>();
  for (const dir of [setInc, setZ]) for (const f of readdirSync(dir)) if (f.endsWith('.data')) m.set(join(dir, f), sha(join(dir, f)));
  return m;
}

async function backup(level: string, out: string, ...extra: string[]): Promise<void> {
  const r = await execa(BIN('virtnbdbackup'), ['-U', URI, '-d', SRC, '-l', level, '-o', out, ...extra], { reject: false, all: true });
  if (r.exitCode !== 0) throw new Error(`virtnbdbackup -l ${level} failed (${r.exitCode}):\n${r.all}`);
}

beforeAll(async () => {
  work = mkdtempSync('/var/tmp/vnbd-boot-test-');
  chmodSync(work, 0o755);
  const vm = await createDemoVm(work, SRC, 'A');
  srcDisk = vm.disk;
  boot = vm.boot;
  expect(await waitForMarker(vm.serialLog, BOOT_TIMEOUT)).toEqual({ marker: 'A'.repeat(24), boot: 1 });

  setInc = join(work, 'set-inc');
  setZ = join(work, 'set-z');
  await backup('full', setInc);
  await setMarker(vm, 'B');
  await backup('inc', setInc);
  await backup('copy', setZ, '-z');
  await virsh('destroy', SRC);
  await virsh('undefine', SRC, '--checkpoints-metadata');
  sums = setSums();
});

afterAll(async () => {
  for (const line of (await virsh('list', '--all', '--name')).stdout.split('\n')) {
    const n = line.trim();
    if (n.includes(`vnbd-boot-`) && n.includes(String(process.pid))) {
      await virsh('destroy', n);
      await virsh('undefine', n, '--checkpoints-metadata');
    }
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

interface BootRun {
  proc: ResultPromise;
  info: { name: string; runDir: string; consoleLogs: string[]; disks: Array<{ dev: string; files: string[]; socket: string }> };
  lines: () => string[];
}

/** Spawn `virtnbdmap --boot --json …` and wait for its JSON line. */
async function startBoot(args: string[]): Promise<BootRun> {
  const proc = execa(BIN('virtnbdmap'), ['--boot', '--json', '--uri', URI, '--shutdown-timeout', '2', ...args], { reject: false });
  const watch = watchJsonLine(proc, 120_000);
  const info = JSON.parse(await watch.line) as BootRun['info'];
  return { proc, info, lines: () => watch.stdout().split('\n').filter((l) => l.startsWith('{')) };
}

async function nbdkitsOf(dir: string): Promise<string[]> {
  const r = await execa('pgrep', ['-af', 'nbdkit'], { reject: false });
  return r.stdout.split('\n').filter((l) => l.includes(dir));
}

async function expectCleanedUp(run: BootRun): Promise<void> {
  expect((await virsh('domstate', run.info.name)).exitCode).not.toBe(0);
  expect(existsSync(run.info.runDir)).toBe(false);
  expect(await nbdkitsOf(run.info.runDir)).toEqual([]);
  expect(setSums()).toEqual(sums);
}

test('boot from the full point shows the full marker; Ctrl-C stops the VM and cleans up', async () => {
  const run = await startBoot(['-i', setInc, '--until', 'virtnbdbackup.0', '--name', `vnbd-boot-a-${process.pid}`]);
  expect(run.info.disks.map((d) => d.dev)).toEqual(['vda']);
  expect(run.info.disks[0]!.files.map((f) => f.split('/').pop())).toEqual(['vda.full.data']);
  expect(await waitForMarker(run.info.consoleLogs[0]!, BOOT_TIMEOUT)).toEqual({ marker: 'A'.repeat(24), boot: 2 });
  run.proc.kill('SIGINT');
  const r = await run.proc;
  expect(r.exitCode).toBe(0);
  await expectCleanedUp(run);
});

test('boot from the newest point (full + inc) shows the changed marker; stopping the domain ends the command', async () => {
  const run = await startBoot(['-i', setInc]);
  expect(run.info.name).toBe(`restore_${SRC}`);
  expect(run.info.disks[0]!.files.map((f) => f.split('/').pop())).toEqual(['vda.full.data', 'vda.inc.virtnbdbackup.1.data']);
  expect(await waitForMarker(run.info.consoleLogs[0]!, BOOT_TIMEOUT)).toEqual({ marker: 'B'.repeat(24), boot: 2 });
  expect((await virsh('destroy', run.info.name)).exitCode).toBe(0);
  const r = await run.proc;
  expect(r.exitCode).toBe(0);
  await expectCleanedUp(run);
});

test('boot from a compressed copy backup', async () => {
  const run = await startBoot(['-i', setZ, '--name', `vnbd-boot-z-${process.pid}`]);
  expect(await waitForMarker(run.info.consoleLogs[0]!, BOOT_TIMEOUT)).toEqual({ marker: 'B'.repeat(24), boot: 2 });
  run.proc.kill('SIGTERM');
  expect((await run.proc).exitCode).toBe(0);
  await expectCleanedUp(run);
});

test('--migrate-to moves the running VM onto new images; it restarts from them with its writes', async () => {
  const name = `vnbd-boot-m-${process.pid}`;
  const dest = join(work, 'migrated');
  const run = await startBoot(['-i', setInc, '--name', name, '--migrate-to', dest]);
  const r = await run.proc;
  expect(r.exitCode).toBe(0);
  const done = JSON.parse(run.lines()[1]!) as { migrated: boolean; images: Record<string, string> };
  expect(done.migrated).toBe(true);
  const image = join(dest, `${name}-vda.qcow2`);
  expect(done.images).toEqual({ vda: image });
  // still running, persistent, on the new image; the backup export is gone
  expect((await virsh('domstate', name)).stdout.trim()).toBe('running');
  expect((await virsh('dominfo', name)).stdout).toMatch(/Persistent:\s+yes/);
  expect((await virsh('domblklist', name)).stdout).toContain(image);
  expect(existsSync(run.info.runDir)).toBe(false);
  expect(await nbdkitsOf(run.info.runDir)).toEqual([]);
  // let the guest finish booting on the new image (it writes its boot count), then restart it
  const inactive = (await virsh('dumpxml', '--inactive', name)).stdout;
  expect(inactive).toContain(image);
  expect(inactive).not.toContain(setInc);
  const serial = /<source path='([^']+)'/.exec(inactive)?.[1];
  expect(serial?.startsWith(dest)).toBe(true);
  await new Promise((res) => setTimeout(res, 5000));
  // boot 2 happened on the copy while it was switched over: wait until the guest has synced it
  const until = Date.now() + BOOT_TIMEOUT;
  for (;;) {
    const q = await execa('qemu-img', ['convert', '-U', '-O', 'raw', image, join(work, 'mig.raw')], { reject: false });
    if (q.exitCode === 0) {
      const dbg = await execa('debugfs', ['-R', 'cat /boots', join(work, 'mig.raw')], { reject: false });
      if (dbg.stdout.trim() === '2') break;
    }
    if (Date.now() > until) throw new Error('the migrated guest never recorded its second boot on the new image');
    await new Promise((res) => setTimeout(res, 2000));
  }
  expect((await virsh('destroy', name)).exitCode).toBe(0);
  expect((await virsh('start', name)).exitCode).toBe(0);
  expect(await waitForMarker(serial!, BOOT_TIMEOUT)).toEqual({ marker: 'B'.repeat(24), boot: 3 });
  await virsh('destroy', name);
  await virsh('undefine', name);
  expect(setSums()).toEqual(sums);
});

test('--keep-overlays keeps the writes across boots, the backup stays untouched', async () => {
  const ov = join(work, 'overlays');
  const name = `vnbd-boot-k-${process.pid}`;
  for (const bootNo of [2, 3]) {
    const run = await startBoot(['-i', setInc, '--name', name, '--keep-overlays', '--overlay-dir', ov]);
    const log = run.info.consoleLogs[0]!;
    expect(await waitForMarker(log, BOOT_TIMEOUT)).toEqual({ marker: 'B'.repeat(24), boot: bootNo });
    expect(markersIn(log)).toHaveLength(1);
    run.proc.kill('SIGINT');
    expect((await run.proc).exitCode).toBe(0);
    expect(existsSync(join(ov, 'vda.overlay.qcow2'))).toBe(true);
    expect(existsSync(join(ov, 'vda.sock'))).toBe(false);
    expect(await nbdkitsOf(ov)).toEqual([]);
  }
  expect(setSums()).toEqual(sums);
});

test('--mount of the real VM backup: each point\'s marker file, read-only, nothing left afterwards', async () => {
  for (const [until, letter] of [['virtnbdbackup.0', 'A'], ['virtnbdbackup.1', 'B']] as const) {
    const mp = join(work, `mnt-${letter}`);
    mkdirSync(mp);
    const proc = execa(BIN('virtnbdmap'), ['-i', setInc, '--until', until, '--mount', mp, '--json'], { reject: false });
    const watch = watchJsonLine(proc, 60_000);
    const info = JSON.parse(await watch.line) as { mounted: Array<{ path: string }> };
    expect(info.mounted.map((m) => m.path)).toEqual([mp]);
    expect(readFileSync(join(mp, 'marker'), 'latin1')).toBe(letter.repeat(24));
    expect(() => writeFileSync(join(mp, 'new-file'), 'x')).toThrow(/EROFS|read-only/);
    proc.kill('SIGINT');
    expect((await proc).exitCode).toBe(0);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(mp);
    expect(readdirSync(mp)).toEqual([]);
  }
  expect(setSums()).toEqual(sums);
});

test('refusals: --boot without -i, a taken --name, a point that does not exist', async () => {
  const noInput = await execa(BIN('virtnbdmap'), ['--boot', '-f', join(setInc, 'vda.full.data')], { reject: false, all: true });
  expect(noInput.exitCode).toBe(2);
  expect(noInput.all).toMatch(/--boot: requires -i/);

  // a domain with the wanted name exists: refused before anything starts
  const taken = `vnbd-boot-t-${process.pid}`;
  const xml = join(work, 'taken.xml');
  mkdirSync(join(work, 'taken'), { recursive: true });
  writeFileSync(xml, guestDomainXml({ name: taken, disk: srcDisk, format: 'qcow2', boot, serialLog: join(work, 'taken', 's.log') }));
  await virsh('define', xml);
  const before = readdirSync('/var/tmp').filter((f) => f.startsWith('virtnbd-boot-')).length;
  const clash = await execa(BIN('virtnbdmap'), ['-i', setInc, '--boot', '--uri', URI, '--name', taken], { reject: false, all: true });
  expect(clash.exitCode).toBe(1);
  expect(clash.all).toContain(`A domain named [${taken}] exists already`);
  expect(readdirSync('/var/tmp').filter((f) => f.startsWith('virtnbd-boot-')).length).toBe(before);
  await virsh('undefine', taken);

  const bad = await execa(BIN('virtnbdmap'), ['-i', setInc, '--boot', '--uri', URI, '--until', 'virtnbdbackup.9'], { reject: false, all: true });
  expect(bad.exitCode).toBe(1);
  expect(bad.all).toMatch(/virtnbdbackup\.9/);
});
