/**
 * Faults, point 4: virtnbdrestore, virtnbdmap and virtnbdmap --mount killed with SIGKILL. The
 * next run cleans up what the dead one left — its partial image (owner record,
 * src/restore/partial-owner.ts), run directories, stale socket, nbdkit/nbdfuse, loop devices and
 * mounts (owner.json in each run directory, src/util/run-dir.ts) — and then works; a partial
 * image nobody can be shown to have left is refused with the exact command that removes it.
 * Data is checked: the restored image and the mounted file equal the backed-up point. A backup
 * set of a 32 MiB ext4 disk image (two points) is written by src/devtools/image-chain.ts: no VM.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { execa } from 'execa';
import { writeImageChain } from '../../src/devtools/image-chain.js';
import { fileSha, nbdcopySha } from '../helpers/map-sha.js';
import { watchJsonLine } from '../helpers/json-line.js';
import { bin, expectExit, NOTHING_LEFT, runCmd, settledLeftovers, startCmd } from './fault-helpers.js';

jest.setTimeout(600_000);

let scratch = '';
let childTmp = '';
let set = '';
let sha1 = '';
const figures = { faults: 0 };
const MARKER = 'restore-map-kill marker, point 1\n';

beforeAll(async () => {
  scratch = mkdtempSync('/var/tmp/vnbd-fault-rm-');
  childTmp = join(scratch, 'tmp');
  mkdirSync(childTmp);
  const mk = async (name: string, text: string): Promise<string> => {
    const root = join(scratch, `root-${name}`);
    mkdirSync(root);
    writeFileSync(join(root, 'marker.txt'), text);
    const img = join(scratch, `${name}.img`);
    await execa('mkfs.ext4', ['-q', '-F', '-d', root, img, '32M']);
    return img;
  };
  const img0 = await mk('p0', 'point 0\n');
  const img1 = await mk('p1', MARKER);
  sha1 = await fileSha(img1);
  set = join(scratch, 'set');
  mkdirSync(set);
  await writeImageChain(set, 'vda', [{ image: img0, level: 'full' }, { image: img1, level: 'inc' }], false);
  // the domain config virtnbdrestore reads (one disk, vda)
  const xml =
    "<domain type='kvm'><name>vnbd-rm-kill</name><memory>65536</memory><os><type arch='x86_64'>hvm</type></os><devices>" +
    "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/nonexistent/vda.qcow2'/><target dev='vda' bus='virtio'/></disk>" +
    '</devices></domain>\n';
  for (const n of [0, 1]) writeFileSync(join(set, `vmconfig.virtnbdbackup.${n}.xml`), xml);
});

afterAll(async () => {
  if (scratch === '') return;
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(scratch));
  for (const m of mounts.reverse()) await execa('umount', ['-l', m], { reject: false });
  rmSync(scratch, { recursive: true, force: true });
  process.stderr.write(`restore-map-kill figures: ${JSON.stringify(figures)}\n`);
});

const env = (): Record<string, string> => ({ TMPDIR: childTmp });
const nothingLeft = async (): Promise<void> => {
  expect(await settledLeftovers({ scopes: [scratch], socketsIn: [scratch] })).toEqual(NOTHING_LEFT);
  expect(readdirSync(childTmp)).toEqual([]); // every run directory (nbdkit's, the restore's, --mount's) is gone
};

async function restoredSha(out: string): Promise<string> {
  const raw = join(scratch, 'restored.raw');
  await execa('qemu-img', ['convert', '-O', 'raw', join(out, 'vda.qcow2'), raw]);
  const sha = await fileSha(raw);
  rmSync(raw);
  return sha;
}

const restoreArgs = (out: string): string[] => ['--nocolor', '-n', '-L', join(scratch, 'restore.log'), '-i', set, '-o', out];

test('virtnbdrestore killed mid-copy: the next restore removes the dead partial image and run directory, and restores equal', async () => {
  const out = join(scratch, 'out');
  const r = await runCmd(bin('virtnbdrestore'), restoreArgs(out), 'restore:mid-copy', env());
  expect(r.signal).toBe('SIGKILL');
  figures.faults++;
  expect(existsSync(join(out, 'vda.qcow2.partial'))).toBe(true);
  expect(existsSync(join(out, 'vda.qcow2'))).toBe(false);
  expect(readdirSync(childTmp).length).toBeGreaterThan(0); // the dead run's directory, to be swept

  const r2 = await runCmd(bin('virtnbdrestore'), restoreArgs(out), undefined, env());
  expectExit(r2, 0);
  expect(r2.stderr).toMatch(/WARNING .*Removed \[.*vda\.qcow2\.partial\] left by virtnbdrestore pid [0-9]+, which is no longer running/);
  expect(await restoredSha(out)).toBe(sha1);
  await nothingLeft();
  rmSync(out, { recursive: true });
});

test('a partial image of unknown origin is refused with the command that removes it; after that command the restore works', async () => {
  const out = join(scratch, 'out2');
  mkdirSync(out);
  writeFileSync(join(out, 'vda.qcow2.partial'), 'left by someone\n');
  const r = await runCmd(bin('virtnbdrestore'), restoreArgs(out), undefined, env());
  expect(r.code).toBe(1);
  const cmd = /remove it with: (rm -f -- \S+)/.exec(r.stderr)?.[1];
  expect(cmd).toBe(`rm -f -- ${join(out, 'vda.qcow2.partial')}`);
  expect(readFileSync(join(out, 'vda.qcow2.partial'), 'utf8')).toBe('left by someone\n'); // never touched
  await execa('sh', ['-c', cmd!]);
  expectExit(await runCmd(bin('virtnbdrestore'), restoreArgs(out), undefined, env()), 0);
  expect(await restoredSha(out)).toBe(sha1);
  await nothingLeft();
  rmSync(out, { recursive: true });
});

test('virtnbdmap killed while serving: the next run on the same socket serves the point again; nothing left', async () => {
  const sock = join(scratch, 'map.sock');
  const serve = async (): Promise<{ p: ReturnType<typeof startCmd> }> => {
    const p = startCmd(bin('virtnbdmap'), ['-i', set, '--socket', sock, '--json', '-L', join(scratch, 'map.log')], undefined, env());
    await watchJsonLine(p as never, 60_000).line;
    return { p };
  };
  const { p: p1 } = await serve();
  p1.kill('SIGKILL');
  expect((await p1).signal).toBe('SIGKILL');
  figures.faults++;
  const { p: p2 } = await serve();
  expect(await nbdcopySha(`nbd+unix:///vda?socket=${sock}`)).toBe(sha1);
  p2.kill('SIGINT');
  expect((await p2).exitCode).toBe(0);
  await nothingLeft();
});

test('virtnbdmap --mount killed: its mounts, loop devices, nbdfuse and run directory are cleaned by the next --mount, which mounts again', async () => {
  const mp = join(scratch, 'mp');
  mkdirSync(mp);
  const mount = async (): Promise<{ p: ReturnType<typeof startCmd>; stderr: () => string }> => {
    const p = startCmd(bin('virtnbdmap'), ['-i', set, '--mount', mp, '--json', '-L', join(scratch, 'mount.log')], undefined, env());
    const w = watchJsonLine(p as never, 120_000);
    await w.line;
    return { p, stderr: w.stderr };
  };
  const m1 = await mount();
  expect(readFileSync(join(mp, 'marker.txt'), 'utf8')).toBe(MARKER);
  m1.p.kill('SIGKILL');
  expect((await m1.p).signal).toBe('SIGKILL');
  figures.faults++;
  // the dead run's state is there (so that "cleaned" can fail)
  const left = await settledLeftovers({ scopes: [scratch] }, 0);
  expect(left.mounts.length + left.loops.length).toBeGreaterThan(0);

  const m2 = await mount();
  expect(m2.stderr()).toMatch(/WARNING .*Cleaned up after a dead virtnbdmap --mount \(pid [0-9]+\)/);
  expect(readFileSync(join(mp, 'marker.txt'), 'utf8')).toBe(MARKER);
  m2.p.kill('SIGINT');
  expect((await m2.p).exitCode).toBe(0);
  await nothingLeft();
});
