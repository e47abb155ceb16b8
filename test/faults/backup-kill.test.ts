/**
 * Faults, point 1: virtnbdbackup SIGKILLed at each named phase (VIRTNBD_FAULT, src/util/fault-point.ts)
 * and at seeded random times, all on one small running TCG domain (two qcow2 disks), one chain.
 * After every kill: the next ordinary run (`-l inc`, or `-l auto`/`full` after a killed full)
 * succeeds, or refuses naming the exact command that fixes it (which is then run as given); after
 * it nothing is left behind (partial/temp files, processes, NBD sockets, libvirt job); at the end
 * every point that was committed maps (nbdkit + plugin) SHA-256-equal to its shadow copy, and the
 * newest point and the point committed just before a kill after `.cpt` also restore equal.
 */
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { execa } from 'execa';
import { TestVm } from '../helpers/test-vm.js';
import { chainSha, fileSha } from '../helpers/map-sha.js';
import { prng, randInt } from '../../src/devtools/prng.js';
import { bin, expectExit, NOTHING_LEFT, runCmd, settledLeftovers, startCmd, waitStopped, type RunResult } from './fault-helpers.js';

jest.setTimeout(1_200_000);

const MiB = 1024 * 1024;
const KiB = 1024;
const SEED = Number(process.env.VIRTNBD_FAULT_SEED ?? 20261204);
const RANDOM_KILLS = Number(process.env.VIRTNBD_RANDOM_KILLS ?? 20);

let vm: TestVm;
let dir = '';
let seq = 0;
let pattern = 0x40;
const points: Array<{ cp: string; vda: string; sda: string }> = [];
const figures = { faults: 0, refusedWithCommand: 0, recoveredByItself: 0 };

beforeAll(async () => {
  vm = await TestVm.create({
    disks: [
      { dev: 'vda', bus: 'virtio', format: 'qcow2', size: 16 * MiB },
      { dev: 'sda', bus: 'sata', format: 'qcow2', size: 8 * MiB },
    ],
  });
  dir = join(vm.dir, 'set');
});

afterAll(async () => {
  await vm?.cleanup();
  // The figures of the README's "Faults survived" table.
  process.stderr.write(`backup-kill figures: ${JSON.stringify({ ...figures, points: points.length })}\n`);
});

function args(extra: string[]): string[] {
  return ['-d', vm.name, '--nocolor', '-o', dir, '-w', '1', '--socketfile', join(vm.dir, `nbd.${++seq}.sock`), '--scratchdir', vm.dir, ...extra];
}

const cpt = (): string[] => (existsSync(join(dir, `${vm.name}.cpt`)) ? (JSON.parse(readFileSync(join(dir, `${vm.name}.cpt`), 'utf8')) as string[]) : []);

/** Guest writes on both disks (a new pattern each time), so every point differs. */
async function mutate(): Promise<void> {
  pattern = (pattern + 1) & 0xff || 1;
  await vm.write('vda', (pattern % 12) * MiB, 768 * KiB, pattern);
  await vm.write('sda', (pattern % 6) * MiB + 64 * KiB, 128 * KiB, pattern ^ 0x5a);
}

function record(): void {
  const c = cpt();
  const cp = c[c.length - 1]!;
  if (points.length === 0 || points[points.length - 1]!.cp !== cp) points.push({ cp, vda: vm.shadowSha('vda'), sda: vm.shadowSha('sda') });
}

/** The exact command a refusal names (`end it with: …` / `Start it again with: …`). */
function namedCommand(stderr: string): string[] | undefined {
  const m = /(?:end it with|Start it again with): (virtnbdbackup [^\n]*?)\s*$/m.exec(stderr);
  return m?.[1]?.split(' ').slice(1);
}

/** The next ordinary run after a fault: succeeds, or refuses with the command that fixes it, which is run as given. */
async function ordinaryRun(level: string): Promise<string> {
  let r = await runCmd(bin('virtnbdbackup'), args(['-l', level]));
  if (r.code !== 0) {
    const fix = namedCommand(r.stderr);
    if (fix === undefined) throw new Error(`the run after the fault failed without naming a command (exit ${r.code}):\n${r.stderr}`);
    figures.refusedWithCommand++;
    const f = await runCmd(bin('virtnbdbackup'), [...fix, '--nocolor', '--socketfile', join(vm.dir, `nbd.${++seq}.sock`), '--scratchdir', vm.dir]);
    expectExit(f, 0);
    if (fix.includes('-k')) r = await runCmd(bin('virtnbdbackup'), args(['-l', level]));
    else r = f;
  } else if (/WARNING .*(interrupted backup run|unfinished (full|copy) backup|no longer running)/.test(r.stderr)) figures.recoveredByItself++;
  if (r.code !== 0 && r.code !== 2) expectExit(r, 0);
  record();
  expect(await settledLeftovers({ scopes: [vm.dir], socketsIn: [vm.dir], dom: vm.dom })).toEqual(NOTHING_LEFT);
  return r.stderr;
}

/** A killed run: checks the kill happened and that the chain state moved at most by the run's own checkpoint. */
function expectKilled(r: RunResult, before: string[]): void {
  if (r.signal !== 'SIGKILL') throw new Error(`expected SIGKILL, got exit ${r.code} ${r.signal}:\n${r.stderr}`);
  figures.faults++;
  const after = cpt();
  expect(after.slice(0, before.length)).toEqual(before);
  expect(after.length - before.length).toBeLessThanOrEqual(1);
  if (after.length > before.length) record(); // committed before it died: a point like any other
}

test('a full killed mid-transfer: the next full moves its files aside and starts the chain', async () => {
  const r = await runCmd(bin('virtnbdbackup'), args(['-l', 'full']), 'backup:mid-disk');
  expectKilled(r, []);
  expect(readdirSync(dir).some((n) => n.endsWith('.full.data.partial'))).toBe(true);
  // an inc refuses, naming the full that starts over
  const inc = await runCmd(bin('virtnbdbackup'), args(['-l', 'inc']));
  expect(inc.code).toBe(1);
  expect(namedCommand(inc.stderr)).toEqual(['-d', vm.name, '-l', 'full', '-o', dir]);
  await ordinaryRun('full');
  expect(cpt()).toEqual(['virtnbdbackup.0']);
});

const PHASES = ['backup:before-job', 'backup:job-started', 'backup:mid-disk', 'backup:between-disks', 'backup:after-data', 'backup:after-cpt'];

test.each(PHASES)('inc killed at %s: the next inc continues the chain, nothing left behind', async (phase) => {
  await mutate();
  const before = cpt();
  const r = await runCmd(bin('virtnbdbackup'), args(['-l', 'inc']), phase);
  expectKilled(r, before);
  if (phase === 'backup:after-cpt') expect(cpt()).toHaveLength(before.length + 1);
  else expect(cpt()).toEqual(before);
  await mutate();
  const log = await ordinaryRun('inc');
  expect(cpt().length).toBeGreaterThan(before.length);
  // what the next run had to clean: the dead run's job (owner record) and/or its files and checkpoint
  if (phase === 'backup:job-started' || phase === 'backup:mid-disk' || phase === 'backup:between-disks') {
    expect(log).toMatch(/was left by virtnbdbackup pid [0-9]+, which is no longer running: ending it/);
  }
  if (phase !== 'backup:before-job' && phase !== 'backup:after-cpt') expect(log).toMatch(/Removed checkpoint \[virtnbdbackup\.[0-9]+\] of an interrupted backup run/);
});

test('a job whose run is alive (stopped at a fault point) is not touched: another run refuses naming the command; after the kill it works', async () => {
  await mutate();
  const before = cpt();
  const child = startCmd(bin('virtnbdbackup'), args(['-l', 'inc']), 'backup:mid-disk:pause');
  await waitStopped(child.pid!, 300_000);
  const other = join(vm.dir, 'other');
  const r = await runCmd(bin('virtnbdbackup'), ['-d', vm.name, '--nocolor', '-l', 'copy', '-o', other, '--socketfile', join(vm.dir, `nbd.${++seq}.sock`), '--scratchdir', vm.dir]);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/Active block job for running domain \(started by virtnbdbackup pid [0-9]+, still running\)/);
  expect(namedCommand(r.stderr)).toEqual(['-d', vm.name, '-k']);
  expect(existsSync(other) ? readdirSync(other).filter((n) => n.includes('.data')) : []).toEqual([]);
  child.kill('SIGKILL');
  const res = await child;
  expectKilled({ code: res.exitCode, signal: res.signal ?? undefined, stdout: '', stderr: res.all ?? '' }, before);
  await ordinaryRun('inc');
  rmSync(other, { recursive: true, force: true });
});

test(`${RANDOM_KILLS} inc runs killed at seeded random times (seed ${SEED}): each time the next inc continues`, async () => {
  const rnd = prng(SEED);
  // How long an inc takes here: the random kills fall inside it.
  await mutate();
  const t0 = Date.now();
  await ordinaryRun('inc');
  const span = Math.max(500, Date.now() - t0);
  for (let i = 0; i < RANDOM_KILLS; i++) {
    await mutate();
    const before = cpt();
    const delay = randInt(rnd, 0, span);
    const child = startCmd(bin('virtnbdbackup'), args(['-l', 'inc']));
    await new Promise((res) => setTimeout(res, delay));
    child.kill('SIGKILL');
    const res = await child;
    if (res.signal === 'SIGKILL') expectKilled({ code: res.exitCode, signal: res.signal, stdout: '', stderr: res.all ?? '' }, before);
    else {
      expect([i, delay, res.exitCode]).toEqual([i, delay, 0]); // it finished first: an ordinary run
      record();
    }
    if (i % 2 === 1) await mutate();
    await ordinaryRun(i % 5 === 4 ? 'auto' : 'inc');
  }
  expect(figures.faults).toBeGreaterThanOrEqual(RANDOM_KILLS / 2);
});

test('every committed point maps SHA-256-equal to its shadow copy; the newest and an after-.cpt point also restore equal', async () => {
  expect(points.length).toBeGreaterThan(PHASES.length + 1);
  for (const p of points) {
    const [vda, sda] = await Promise.all([chainSha(dir, 'vda', p.cp), chainSha(dir, 'sda', p.cp)]);
    expect([p.cp, vda.sha, sda.sha]).toEqual([p.cp, p.vda, p.sda]);
  }
  const afterCpt = points.find((p, i) => i > 0 && !readdirSync(dir).includes(`vda.${p.cp}.qcow.json`)) ?? points[points.length - 2]!;
  for (const p of [afterCpt, points[points.length - 1]!]) {
    const out = join(vm.dir, `restore-${p.cp}`);
    const r = await runCmd(bin('virtnbdrestore'), ['--nocolor', '-n', '-L', join(vm.dir, 'restore.log'), '-i', dir, '-o', out, '--until', p.cp]);
    expectExit(r, 0);
    for (const dev of ['vda', 'sda'] as const) {
      const raw = join(out, `${dev}.raw`);
      await execa('qemu-img', ['convert', '-O', 'raw', join(out, `${dev}.qcow2`), raw]);
      expect([p.cp, dev, await fileSha(raw)]).toEqual([p.cp, dev, p[dev]]);
    }
    rmSync(out, { recursive: true, force: true });
  }
  process.stderr.write(`backup-kill: ${figures.faults} kills, ${points.length} points verified by map, 2 by restore\n`);
});
