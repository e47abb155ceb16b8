/**
 * virtnbdprune (the real command, spawned) on the sets written by the original virtnbdbackup
 * (test/fixtures/upstream-sets: two disks, full + 3 incs + a diff, uncompressed d1 and LZ4 d2).
 * After every prune each remaining point of each disk is mapped through our nbdkit plugin and its
 * SHA-256 compared with the reference taken from the shadow copy at that point; `virtnbdrestore
 * -o verify` passes; the original's virtnbdrestore (Debian package) restores the newest point of
 * the pruned set from its own mtime-ordered file list. Kill -9 at every prune step
 * (VIRTNBD_FAULT=prune:<step>): every point still listed maps to its reference, and the next run
 * finishes the prune with the same result as an uninterrupted one.
 */
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jest } from '@jest/globals';
import { execa } from 'execa';
import { SETS, sha256sums } from '../helpers/upstream-sets.js';
import { chainSha } from '../helpers/map-sha.js';
import { resolvedSha } from '../helpers/resolved-sha.js';
import { discoverBackupDir } from '../../src/chain/discover.js';
import { availablePoints } from '../../src/chain/order.js';
import { readSavesetMetadata } from '../../src/saveset/reader.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PRUNE = join(ROOT, 'bin', 'virtnbdprune');
const RESTORE = join(ROOT, 'bin', 'virtnbdrestore');
const ORIGINAL = '/usr/bin/virtnbdrestore';
const DISKS = ['vda', 'sdb'];

jest.setTimeout(600_000);

let work: string;
beforeAll(async () => {
  if (!existsSync(join(ROOT, 'dist', 'src', 'cli', 'virtnbdprune.js'))) throw new Error('dist/ is missing: run npm run build:ts');
  work = mkdtempSync('/var/tmp/virtnbd-prune-fx-');
});
afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

let seq = 0;
/** A copy of fixture set `set` whose mtimes follow the chain order (git does not keep them; the original's restore orders by mtime). */
function copySet(set: string): string {
  const dir = join(work, `${set}-${++seq}`);
  cpSync(join(SETS, set, 'backup'), dir, { recursive: true });
  const order = (n: string): number => {
    if (n.includes('.full.data')) return 0;
    const m = /\.inc\.virtnbdbackup\.(\d+)\.data/.exec(n);
    if (m) return Number(m[1]) * 2;
    if (/\.diff\./.test(n)) return 5; // taken between inc 2 and inc 3
    return 10;
  };
  const t0 = Date.now() / 1000 - 3600;
  for (const n of readdirSync(dir)) if (/\.data(\.chksum)?$/.test(n)) utimesSync(join(dir, n), t0 + order(n) * 60, t0 + order(n) * 60);
  return dir;
}

/** Reference name in SHA256SUMS of a point label. */
function refOf(disk: string, point: string): string {
  const m = /^virtnbdbackup\.(\d+)$/.exec(point);
  return m ? `${disk}.${m[1]}.raw` : `${disk}.diff3.raw`;
}

async function prune(dir: string, args: string[], env: Record<string, string> = {}) {
  return execa(PRUNE, ['-i', dir, '--nocolor', '-L', join(work, 'prune.log'), ...args], { reject: false, env: { ...process.env, ...env }, timeout: 120_000 });
}

/** Every point still listed for every disk maps to its reference; returns the points per disk. */
async function expectAllPointsCorrect(dir: string, set: string, how: 'plugin' | 'resolver' = 'plugin'): Promise<Record<string, string[]>> {
  const shaOf = async (disk: string, until?: string): Promise<string> => (how === 'plugin' ? (await chainSha(dir, disk, until)).sha : resolvedSha(dir, disk, until));
  const sums = sha256sums(set);
  const found = discoverBackupDir(dir);
  const out: Record<string, string[]> = {};
  for (const disk of DISKS) {
    const pts = availablePoints(disk, found.disks.get(disk) ?? []);
    out[disk] = pts;
    for (const p of pts) {
      const sha = await shaOf(disk, p);
      expect(`${disk}@${p}=${sha}`).toBe(`${disk}@${p}=${sums.get(refOf(disk, p))}`);
    }
    expect(await shaOf(disk)).toBe(sums.get(`${disk}.3.raw`));
  }
  return out;
}

async function expectVerifyOk(dir: string): Promise<void> {
  const r = await execa(RESTORE, ['-i', dir, '-o', 'verify', '--nocolor', '-L', join(work, 'verify.log')], { reject: false });
  if (r.exitCode !== 0) throw new Error(`verify failed:\n${r.stderr}`);
  expect(r.stderr).not.toMatch(/ERROR/);
  expect(r.stderr).toMatch(/ OK, 0 with problems, 0 without a checksum to compare/);
}

const dataFiles = (dir: string): string[] => readdirSync(dir).filter((n) => /\.data$/.test(n)).sort();

describe.each(['d1', 'd2'])('prune of the original set %s', (set) => {
  test.each([1, 2, 3])('--keep-last %i: remaining points = shadow, verify OK, metadata of the new full', async (keep) => {
    const dir = copySet(set);
    const r = await prune(dir, ['--keep-last', String(keep), '--json']);
    if (r.exitCode !== 0) throw new Error(r.stderr);
    const s = JSON.parse(r.stdout) as { cut: string; kept: string[]; pruned: string[]; disks: { dev: string }[] };
    // points: .0 .1 .2 diff .3; a kept diff keeps its checkpoint (.2) too
    const expectCut = { 1: 'virtnbdbackup.3', 2: 'virtnbdbackup.2', 3: 'virtnbdbackup.2' }[keep];
    expect(s.cut).toBe(expectCut);
    expect(s.kept.length).toBe(keep === 1 ? 1 : 3);
    // through the real plugin once per set, in-process resolution for the other cases (same resolver)
    const pts = await expectAllPointsCorrect(dir, set, keep === 1 ? 'plugin' : 'resolver');
    for (const disk of DISKS) {
      expect(pts[disk]![0]).toBe(expectCut);
      const m = readSavesetMetadata(join(dir, `${disk}.full.data`)).metadata;
      expect(m).toMatchObject({ checkpointName: expectCut, parentCheckpoint: '', incremental: false, compressed: set === 'd2' ? 2 : false, diskName: disk });
      expect(existsSync(join(dir, `${disk}.inc.virtnbdbackup.1.data`))).toBe(false);
      expect(existsSync(join(dir, `${disk}.virtnbdbackup.1.qcow.json`))).toBe(false);
      expect(existsSync(join(dir, `${disk}.${expectCut}.qcow.json`))).toBe(true);
    }
    expect(existsSync(join(dir, 'vmconfig.virtnbdbackup.0.xml'))).toBe(false);
    expect(existsSync(join(dir, `vmconfig.${expectCut}.xml`))).toBe(true);
    // .cpt and checkpoints/ unchanged: the next inc continues from .3 and is named .4
    expect(readFileSync(join(dir, readdirSync(dir).find((n) => n.endsWith('.cpt'))!), 'utf8')).toBe(
      '["virtnbdbackup.0", "virtnbdbackup.1", "virtnbdbackup.2", "virtnbdbackup.3"]',
    );
    expect(readdirSync(join(dir, 'checkpoints')).length).toBe(4);
    expect(readdirSync(dir).filter((n) => /partial|journal/.test(n))).toEqual([]);
    await expectVerifyOk(dir);
    // A second run with the same policy has nothing left to do.
    const again = await prune(dir, ['--keep-last', String(keep), '--json']);
    expect(JSON.parse(again.stdout).cut).toBeUndefined();
  });

  test('--dry-run changes nothing; --keep-within keeps dated points', async () => {
    const dir = copySet(set);
    const before = dataFiles(dir).map((n) => `${n}:${createHash('sha256').update(readFileSync(join(dir, n))).digest('hex')}`);
    const r = await prune(dir, ['--keep-last', '1', '--dry-run', '--json']);
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ dryRun: true, cut: 'virtnbdbackup.3', pruned: ['virtnbdbackup.0', 'virtnbdbackup.1', 'virtnbdbackup.2', expect.any(String)] });
    expect(dataFiles(dir).map((n) => `${n}:${createHash('sha256').update(readFileSync(join(dir, n))).digest('hex')}`)).toEqual(before);
    // The fixture points are from 2026-11-28: everything within 1000 days stays.
    const w = await prune(dir, ['--keep-within', '1000d', '--json']);
    expect(JSON.parse(w.stdout)).toMatchObject({ pruned: [] });
    // usage errors exit 2
    expect((await prune(dir, [])).exitCode).toBe(2);
    expect((await prune(dir, ['--keep-within', '3 days'])).exitCode).toBe(2);
    expect((await prune(dir, ['--keep-last', '0'])).exitCode).toBe(2);
    expect((await prune(join(dir, 'nope'), ['--keep-last', '1'])).exitCode).toBe(1);
  });
});

const HAVE_ORIGINAL = existsSync(ORIGINAL);
(HAVE_ORIGINAL ? describe : describe.skip)("the original's virtnbdrestore reads pruned sets", () => {
  beforeAll(async () => {
    const lib = await execa('sh', ['-c', 'pgrep -x libvirtd >/dev/null || (virtlogd -d; libvirtd -d; sleep 1)'], { reject: false });
    if (lib.exitCode !== 0) throw new Error(`cannot start libvirtd: ${lib.stderr}`);
  });

  test.each([
    ['d1', 1],
    ['d2', 1],
    ['d2', 2],
  ])('%s --keep-last %i: newest point restored by /usr/bin/virtnbdrestore = shadow', async (set, keep) => {
    const dir = copySet(set);
    const r = await prune(dir, ['--keep-last', String(keep)]);
    if (r.exitCode !== 0) throw new Error(r.stderr);
    const out = mkdtempSync(join(work, 'orig-'));
    const o = await execa(ORIGINAL, ['-i', dir, '-o', join(out, 'restore'), '-n', '-f', join(out, 'nbd.sock'), '-L', join(out, 'restore.log')], {
      reject: false,
      timeout: 120_000,
      all: true,
    });
    if (o.exitCode !== 0) throw new Error(`virtnbdrestore exited ${o.exitCode}:\n${o.all}`);
    expect(o.all).not.toMatch(/ERROR|CRITICAL|Traceback/);
    const sums = sha256sums(set);
    for (const disk of DISKS) {
      const img = readdirSync(join(out, 'restore')).find((n) => n.startsWith(disk) && !n.endsWith('.xml'));
      expect(img).toBeDefined();
      const raw = join(out, `${disk}.raw`);
      await execa('qemu-img', ['convert', '-O', 'raw', join(out, 'restore', img!), raw]);
      expect(createHash('sha256').update(readFileSync(raw)).digest('hex')).toBe(sums.get(`${disk}.3.raw`));
    }
    rmSync(out, { recursive: true, force: true });
  });
});

describe('kill -9 at every prune step (LZ4 set d2, --keep-last 1)', () => {
  let reference: string[];
  beforeAll(async () => {
    const dir = copySet('d2');
    const r = await prune(dir, ['--keep-last', '1']);
    if (r.exitCode !== 0) throw new Error(r.stderr);
    reference = readdirSync(dir).sort();
  });

  test.each([
    'prune:journal-written',
    'prune:base-written',
    'prune:base-written@2',
    'prune:base-switched',
    'prune:base-switched@2',
    'prune:bases-done',
    'prune:removed-one',
    'prune:removed-one@3',
    'prune:removed',
    'prune:chksum-renamed',
    'prune:chksum-renamed@2',
    'prune:renamed',
    'prune:side-files',
  ])('%s: every listed point still maps correctly; the next run finishes the prune', async (point) => {
    const dir = copySet('d2');
    const killed = await prune(dir, ['--keep-last', '1'], { VIRTNBD_FAULT: point });
    expect(killed.signal).toBe('SIGKILL');
    expect(existsSync(join(dir, 'virtnbdprune.journal'))).toBe(true);
    await expectAllPointsCorrect(dir, 'd2', 'resolver');
    const r = await prune(dir, ['--keep-last', '1', '--json']);
    if (r.exitCode !== 0) throw new Error(r.stderr);
    expect(JSON.parse(r.stdout)).toMatchObject({ resumed: 'virtnbdbackup.3' });
    expect(readdirSync(dir).sort()).toEqual(reference);
    const pts = await expectAllPointsCorrect(dir, 'd2', 'resolver');
    expect(pts).toEqual({ vda: ['virtnbdbackup.3'], sdb: ['virtnbdbackup.3'] });
    await expectVerifyOk(dir);
  });
});
