/**
 * The stale-state helpers of the faults work: owner records (a live, a dead and a recycled pid),
 * run-directory sweeping (a dead owner's directory removed, a live one's and an unowned one kept),
 * and which target directories hold an unfinished full/copy (moved aside, never a complete copy
 * or a directory with `.cpt`).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { ownerAlive, procStartTime, selfOwner } from '../../../src/util/run-owner.js';
import { createRunDirSync, sweepDeadRunDirs } from '../../../src/util/run-dir.js';
import { findUncommittedFull, moveAside } from '../../../src/backup/uncommitted-full.js';
import { inspectTarget } from '../../../src/backup/target-dir.js';
import { recordingLogger } from '../backup/recording-logger.js';

let dir = '';
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'virtnbd-owners-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function deadPid(): Promise<number> {
  const r = await execa('sh', ['-c', 'echo $$']);
  return Number(r.stdout.trim());
}

test('owner records: self alive, an ended process dead, a recycled pid (other start time) dead', async () => {
  const me = selfOwner('test');
  expect(ownerAlive(me)).toBe(true);
  expect(me.start).toBe(procStartTime(process.pid));
  expect(ownerAlive({ ...me, pid: await deadPid() })).toBe(false);
  expect(ownerAlive({ ...me, start: '1' })).toBe(false);
  expect(ownerAlive({ ...me, host: 'another-host' })).toBe(true); // never cleaned from here
});

test('sweep: the dead owner\'s run directory goes, a live one\'s and one without owner.json stay', async () => {
  const prefix = join(dir, 'run-');
  const live = createRunDirSync(prefix, 'live run');
  const dead = createRunDirSync(prefix, 'dead run');
  writeFileSync(join(dead, 'owner.json'), JSON.stringify({ ...selfOwner('dead run'), pid: await deadPid() }));
  writeFileSync(join(dead, 'leftover.sock'), '');
  const unowned = join(dir, 'run-unowned');
  mkdirSync(unowned);
  const lines: string[] = [];
  expect(await sweepDeadRunDirs(prefix, (l) => lines.push(l))).toBe(1);
  expect([existsSync(live), existsSync(dead), existsSync(unowned)]).toEqual([true, false, true]);
  expect(lines).toEqual([expect.stringMatching(/^Cleaned up after a dead dead run \(pid [0-9]+\): removed /)]);
});

test('unfinished full/copy: found and moved aside; a complete copy and a chain with .cpt never', async () => {
  const files = (names: string[]): void => names.forEach((n) => writeFileSync(join(dir, n), 'x'));
  const find = async () => findUncommittedFull(dir, 'vm', await inspectTarget(dir), join(dir, 'checkpoints'));
  files(['vda.full.data', 'sda.full.data.partial', 'vmconfig.virtnbdbackup.0.xml', 'backup.full.20261204120000.log']);
  const run = await find();
  expect(run?.level).toBe('full');
  expect(run?.paths.map((p) => p.slice(dir.length + 1)).sort()).toEqual(['sda.full.data.partial', 'vda.full.data', 'vmconfig.virtnbdbackup.0.xml']);
  await moveAside(run!, 1234, recordingLogger());
  expect(existsSync(join(dir, 'vda.full.data.failed-1234'))).toBe(true);
  expect(await find()).toBeUndefined(); // moved-aside files count for nothing
  expect((await inspectTarget(dir)).dataLike).toEqual([]);

  files(['vda.copy.data', 'vmconfig.copy.xml']);
  expect(await find()).toBeUndefined(); // a complete copy
  files(['sda.copy.data.partial']);
  expect((await find())?.level).toBe('copy');
  rmSync(join(dir, 'sda.copy.data.partial'));
  rmSync(join(dir, 'vda.copy.data'));
  files(['vda.full.data', 'vm.cpt']);
  expect(await find()).toBeUndefined(); // committed chain
});
