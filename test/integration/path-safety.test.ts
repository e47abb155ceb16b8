/**
 * Path safety on the real virtnbdrestore (src/util/safe-path.ts): a copy of the upstream fixture
 * set d2 with hostile names planted in its vmconfig and qcow.json, restored into an output
 * directory with planted symlinks. Nothing is ever written outside the output directory, no
 * planted link is followed, and what is restored is SHA-256-equal to the reference.
 */
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jest } from '@jest/globals';
import { execa } from 'execa';
import { SETS, sha256sums } from '../helpers/upstream-sets.js';
import { fileSha } from '../helpers/map-sha.js';
import { chainFromDir } from '../../src/chain/index.js';

jest.setTimeout(300_000);

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const RESTORE = join(ROOT, 'bin', 'virtnbdrestore');

let work: string;
let set: string;
let victim: string;

beforeEach(() => {
  work = mkdtempSync('/var/tmp/virtnbd-pathsafety-');
  set = join(work, 'set');
  cpSync(join(SETS, 'd2', 'backup'), set, { recursive: true });
  victim = join(work, 'victim');
  writeFileSync(victim, 'precious\n', { mode: 0o644 });
});
afterEach(() => rmSync(work, { recursive: true, force: true }));

/** Every path below `dir`, sorted (symlinks not followed). */
function tree(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

function editFile(path: string, edit: (s: string) => string): void {
  const before = readFileSync(path, 'utf8');
  const after = edit(before);
  if (after === before) throw new Error(`editFile: nothing changed in ${path}`);
  writeFileSync(path, after);
}

async function restore(args: string[]): Promise<{ code: number | undefined; all: string }> {
  const r = await execa(RESTORE, ['-i', set, '--nocolor', '-n', '--until', 'virtnbdbackup.3', ...args], { reject: false, all: true, stdin: 'ignore' });
  return { code: r.exitCode, all: String(r.all) };
}

test('hostile disk targets and data-file names stay inside the output directory', async () => {
  const vmconfig = join(set, 'vmconfig.virtnbdbackup.3.xml');
  // a disk target that climbs out, and a source path that does
  editFile(vmconfig, (s) => s.replace("<target dev='sdb' bus='sata'/>", "<target dev='../../escaped' bus='sata'/>"));
  editFile(vmconfig, (s) => s.replace('/var/lib/libvirt/images/fixture-4/vda.qcow2', '/../../../../tmp/../escaped-vda.qcow2'));
  // an external data file that climbs out, in every qcow.json of vda
  for (const f of readdirSync(set).filter((n) => n.startsWith('vda.') && n.endsWith('.qcow.json'))) {
    const j = JSON.parse(readFileSync(join(set, f), 'utf8'));
    j['format-specific'].data['data-file'] = '../../../../tmp/escaped-data.raw';
    writeFileSync(join(set, f), JSON.stringify(j));
  }
  const parent = join(work, 'parent');
  const out = join(parent, 'out');
  mkdirSync(parent);
  const before = tree(work).filter((p) => !p.startsWith('parent'));
  const r = await restore(['-o', out, '-c', '-L', join(parent, 'restore.log')]);
  expect({ code: r.code, all: r.code === 0 ? '' : r.all }).toEqual({ code: 0, all: '' });
  expect(r.all).toContain('No backup file for disk [../../escaped] found');
  // nothing appeared anywhere but in out/
  expect(tree(work).filter((p) => !p.startsWith('parent'))).toEqual(before);
  expect(readdirSync(parent).sort()).toEqual(['out', 'restore.log']);
  const names = tree(out);
  expect(names).toEqual(expect.arrayContaining(['escaped-vda.qcow2', 'escaped-data.raw', 'vmconfig.xml']));
  for (const n of names) expect(n.includes('/')).toBe(false);
  // the data: the restored image (with its external data file) reads as the reference
  const raw = join(work, 'check.raw');
  await execa('qemu-img', ['convert', '-O', 'raw', join(out, 'escaped-vda.qcow2'), raw]);
  expect(await fileSha(raw)).toBe(sha256sums('d2').get('vda.3.raw'));
  // the adjusted config points inside out/
  const adjusted = readFileSync(join(out, 'vmconfig.xml'), 'utf8');
  expect(adjusted).toContain(`file="${join(out, 'escaped-vda.qcow2')}"`);
  const files = [...adjusted.matchAll(/file="([^"]*escaped[^"]*)"/g)].map((m) => m[1]!);
  expect(files.length).toBeGreaterThan(0);
  for (const f of files) expect(f.startsWith(`${out}/`)).toBe(true);
});

test('planted symlinks in the output directory are never followed', async () => {
  const out = join(work, 'out');
  mkdirSync(out);
  symlinkSync(victim, join(out, 'vda.qcow2.partial'));
  symlinkSync(victim, join(out, 'sdb.qcow2'));
  symlinkSync(victim, join(out, 'vmconfig.xml'));
  const r = await restore(['-o', out, '-c', '-L', join(work, 'restore.log')]);
  expect(r.code).toBe(1);
  expect(r.all).toContain(`Partial image [${join(out, 'vda.qcow2.partial')}] exists`);
  expect(r.all).toContain(`Target file already exists: [${join(out, 'sdb.qcow2')}]`);
  expect(readFileSync(victim, 'utf8')).toBe('precious\n');
  expect((statSync(victim).mode & 0o777).toString(8)).toBe('644');
  expect(tree(out)).toEqual(['sdb.qcow2', 'vda.qcow2.partial', 'vmconfig.xml']);
});

test('a planted symlink at the log file name is refused', async () => {
  const log = join(work, 'restore.log');
  symlinkSync(victim, log);
  const r = await restore(['-o', 'dump', '-L', log]);
  expect(r.code).toBe(1);
  expect(r.all).toContain(`Unable to open log file [${log}]`);
  expect(readFileSync(victim, 'utf8')).toBe('precious\n');
});

test('virtnbdmap --boot never follows a symlink planted in --overlay-dir', async () => {
  const ov = join(work, 'ov');
  mkdirSync(ov);
  chmodSync(victim, 0o600);
  // a kept overlay "of this point" that is a link to the victim: before, it was reused and chmod'ed 0666
  symlinkSync(victim, join(ov, 'vda.overlay.qcow2'));
  const chain = chainFromDir(set, { disk: 'vda' }).files.map((f) => f.path).join('\n') + '\n';
  writeFileSync(join(ov, 'vda.overlay.qcow2.chain'), chain);
  const r = await execa(join(ROOT, 'bin', 'virtnbdmap'), ['-i', set, '--boot', '--keep-overlays', '--overlay-dir', ov, '--name', `virtnbd-ps-${process.pid}`], {
    reject: false,
    all: true,
    stdin: 'ignore',
    timeout: 120_000,
  });
  expect(r.exitCode).toBe(1);
  expect(String(r.all)).toContain(`Refusing to use [${join(ov, 'vda.overlay.qcow2')}]: it is a symbolic link`);
  expect(readFileSync(victim, 'utf8')).toBe('precious\n');
  expect((statSync(victim).mode & 0o777).toString(8)).toBe('600');
  const left = await execa('pgrep', ['-f', ov], { reject: false });
  expect(left.stdout).toBe('');
});
