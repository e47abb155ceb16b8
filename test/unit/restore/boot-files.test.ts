/**
 * src/restore/boot-files.ts (BEHAVIOUR.md §11.8 "Ours", FORMAT.md §6.7) in temp directories:
 * exact names per point, fallback to the newest earlier point, copy sets, `UEFI.fd` vs
 * `UEFI.fd.bak` (D32), never overwriting, relocation below a root, refused paths.
 */
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { restoreBootFiles } from '../../../src/restore/boot-files.js';
import { recordingLogger } from '../backup/recording-logger.js';

let tmp = '';
let input = '';
let root = '';

beforeEach(() => {
  tmp = mkdtempSync(join(tmpdir(), 'virtnbd-boot-'));
  input = join(tmp, 'backup');
  root = join(tmp, 'root');
  mkdirSync(input);
});

afterEach(() => {
  rmSync(tmp, { recursive: true, force: true });
});

function vmconfig(os: string): string {
  return `<domain type='kvm'>\n  <name>vm1</name>\n  <os>\n    <type arch='x86_64'>hvm</type>\n${os}\n  </os>\n</domain>\n`;
}

const UEFI = vmconfig(
  `    <loader readonly='yes' type='pflash'>/usr/share/OVMF/UEFI.fd</loader>\n    <nvram>/var/lib/libvirt/qemu/nvram/vm1_VARS.fd</nvram>`,
);

function put(name: string, content: string): void {
  writeFileSync(join(input, name), content);
}

/** All files below `dir` (relative paths), sorted. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name), `${rel}${e.name}/`);
      else out.push(`${rel}${e.name}`);
    }
  };
  if (existsSync(dir)) walk(dir, '');
  return out.sort();
}

test('exact names of the point; UEFI.fd.bak.* and other points are not taken (D32)', async () => {
  put('UEFI.fd.virtnbdbackup.1', 'loader of point 1');
  put('UEFI.fd.bak.virtnbdbackup.1', 'a backup of the loader, not the loader');
  put('UEFI.fd.virtnbdbackup.10', 'loader of point 10');
  put('UEFI.fd', 'loader of a copy run');
  put('vm1_VARS.fd.virtnbdbackup.1', 'vars of point 1');
  put('vm1_VARS.fd.virtnbdbackup.2', 'vars of point 2');
  const log = recordingLogger();
  const r = await restoreBootFiles(input, UEFI, 'virtnbdbackup.1', log, { root });
  const loader = join(root, 'usr/share/OVMF/UEFI.fd');
  const nvram = join(root, 'var/lib/libvirt/qemu/nvram/vm1_VARS.fd');
  expect(r).toEqual({ copied: [loader, nvram], skipped: [] });
  expect(readFileSync(loader, 'utf8')).toBe('loader of point 1');
  expect(readFileSync(nvram, 'utf8')).toBe('vars of point 1');
  expect(tree(root)).toEqual(['usr/share/OVMF/UEFI.fd', 'var/lib/libvirt/qemu/nvram/vm1_VARS.fd']); // no temp files left
  expect(log.counts).toEqual({ warnings: 0, errors: 0 });
});

test('copy set (ident null): the plain base name', async () => {
  put('UEFI.fd', 'copy loader');
  put('UEFI.fd.bak', 'not this one');
  put('vm1_VARS.fd', 'copy vars');
  const r = await restoreBootFiles(input, UEFI, null, recordingLogger(), { root });
  expect(r.copied).toHaveLength(2);
  expect(readFileSync(join(root, 'usr/share/OVMF/UEFI.fd'), 'utf8')).toBe('copy loader');
  expect(readFileSync(join(root, 'var/lib/libvirt/qemu/nvram/vm1_VARS.fd'), 'utf8')).toBe('copy vars');
});

test('missing copy of the point: the newest earlier point that has one; none at all: warning', async () => {
  put('vm1_VARS.fd.virtnbdbackup.0', 'vars 0');
  put('vm1_VARS.fd.virtnbdbackup.1', 'vars 1');
  put('vm1_VARS.fd.virtnbdbackup.3', 'vars 3 (a later point: never used for point 2)');
  const log = recordingLogger();
  const r = await restoreBootFiles(input, UEFI, '1795884514', log, { root, earlierIdents: ['virtnbdbackup.2', 'virtnbdbackup.1', 'virtnbdbackup.0'] });
  const nvram = join(root, 'var/lib/libvirt/qemu/nvram/vm1_VARS.fd');
  expect(r).toEqual({ copied: [nvram], skipped: [join(root, 'usr/share/OVMF/UEFI.fd')] });
  expect(readFileSync(nvram, 'utf8')).toBe('vars 1');
  expect(log.at('WARNING')).toEqual([`Unable to identify backup file for [/usr/share/OVMF/UEFI.fd] in specified backup folder [${input}]`]);
  expect(log.at('INFO')).toContain('No copy of boot file [/var/lib/libvirt/qemu/nvram/vm1_VARS.fd] for this backup point, using [vm1_VARS.fd.virtnbdbackup.1] of an earlier one.');
});

test('an existing destination is never overwritten (INFO, skipped); the other file is still restored', async () => {
  put('UEFI.fd.virtnbdbackup.0', 'backup loader');
  put('vm1_VARS.fd.virtnbdbackup.0', 'backup vars');
  const loader = join(root, 'usr/share/OVMF/UEFI.fd');
  mkdirSync(join(root, 'usr/share/OVMF'), { recursive: true });
  writeFileSync(loader, 'the host firmware');
  const log = recordingLogger();
  const r = await restoreBootFiles(input, UEFI, 'virtnbdbackup.0', log, { root });
  expect(r.skipped).toEqual([loader]);
  expect(r.copied).toEqual([join(root, 'var/lib/libvirt/qemu/nvram/vm1_VARS.fd')]);
  expect(readFileSync(loader, 'utf8')).toBe('the host firmware');
  expect(log.at('INFO')).toContain(`File [${loader}] already exists, skipping.`);
  expect(log.counts).toEqual({ warnings: 0, errors: 0 });
  // a dangling symlink counts as existing too: nothing is written through it
  rmSync(join(root, 'var'), { recursive: true });
  mkdirSync(join(root, 'var/lib/libvirt/qemu/nvram'), { recursive: true });
  symlinkSync(join(tmp, 'elsewhere'), join(root, 'var/lib/libvirt/qemu/nvram/vm1_VARS.fd'));
  const again = await restoreBootFiles(input, UEFI, 'virtnbdbackup.0', recordingLogger(), { root });
  expect(again.copied).toEqual([]);
  expect(existsSync(join(tmp, 'elsewhere'))).toBe(false);
});

test('without root the destination is the original absolute path', async () => {
  const target = join(tmp, 'host', 'vmlinuz-6.1');
  put('vmlinuz-6.1.virtnbdbackup.0', 'kernel');
  put('initrd.img-6.1.virtnbdbackup.0', 'initrd');
  const xml = vmconfig(`    <kernel>${target}</kernel>\n    <initrd>${join(tmp, 'host', 'initrd.img-6.1')}</initrd>\n    <cmdline>root=/dev/vda</cmdline>`);
  const r = await restoreBootFiles(input, xml, 'virtnbdbackup.0', recordingLogger());
  expect(r.copied).toEqual([target, join(tmp, 'host', 'initrd.img-6.1')]);
  expect(readFileSync(target, 'utf8')).toBe('kernel');
  expect(tree(join(tmp, 'host'))).toEqual(['initrd.img-6.1', 'vmlinuz-6.1']);
});

test('file mode of the copy follows the backup copy', async () => {
  put('vm1_VARS.fd.virtnbdbackup.0', 'vars');
  chmodSync(join(input, 'vm1_VARS.fd.virtnbdbackup.0'), 0o600);
  await restoreBootFiles(input, UEFI, 'virtnbdbackup.0', recordingLogger(), { root });
  expect(lstatSync(join(root, 'var/lib/libvirt/qemu/nvram/vm1_VARS.fd')).mode & 0o777).toBe(0o600);
});

test.each([
  ['relative', 'nvram/vm1_VARS.fd'],
  ['parent segment', '/var/lib/../../etc/vm1_VARS.fd'],
  ['dot segment', '/var/lib/./vm1_VARS.fd'],
  ['double slash', '/var//lib/vm1_VARS.fd'],
  ['trailing slash', '/var/lib/vm1_VARS.fd/'],
  ['base name ..', '/var/lib/..'],
])('refused: %s path (error, nothing written)', async (_what, path) => {
  put('vm1_VARS.fd.virtnbdbackup.0', 'vars');
  put('...virtnbdbackup.0', 'x');
  const log = recordingLogger();
  const r = await restoreBootFiles(input, vmconfig(`    <nvram>${path}</nvram>`), 'virtnbdbackup.0', log, { root });
  expect(r).toEqual({ copied: [], skipped: [path] });
  expect(log.at('ERROR')).toEqual([`Refusing to restore boot file [${path}]: the path must be absolute and normalised.`]);
  expect(tree(root)).toEqual([]);
});

test('a symlink or directory in the backup is not taken as the copy; invalid earlier idents are ignored', async () => {
  writeFileSync(join(tmp, 'secret'), 'not from the backup');
  symlinkSync(join(tmp, 'secret'), join(input, 'vm1_VARS.fd.virtnbdbackup.1'));
  mkdirSync(join(input, 'UEFI.fd.virtnbdbackup.1'));
  put('vm1_VARS.fd.virtnbdbackup.0', 'vars 0');
  const log = recordingLogger();
  const r = await restoreBootFiles(input, UEFI, 'virtnbdbackup.1', log, { root, earlierIdents: ['../backup/x', 'virtnbdbackup.0'] });
  expect(r.copied).toEqual([join(root, 'var/lib/libvirt/qemu/nvram/vm1_VARS.fd')]);
  expect(readFileSync(r.copied[0]!, 'utf8')).toBe('vars 0');
  expect(log.counts.warnings).toBe(1); // the loader: no regular file
});

test('no boot files in the vmconfig: nothing to do', async () => {
  expect(await restoreBootFiles(input, vmconfig(''), 'virtnbdbackup.0', recordingLogger(), { root })).toEqual({ copied: [], skipped: [] });
});

test('a failing copy is an error, leaves no temp file, and does not stop the next file', async () => {
  put('UEFI.fd.virtnbdbackup.0', 'loader');
  put('vm1_VARS.fd.virtnbdbackup.0', 'vars');
  // the loader's destination directory is a file: mkdir fails
  mkdirSync(join(root, 'usr/share'), { recursive: true });
  writeFileSync(join(root, 'usr/share/OVMF'), 'a file where a directory should be');
  const log = recordingLogger();
  const r = await restoreBootFiles(input, UEFI, 'virtnbdbackup.0', log, { root });
  expect(r.skipped).toEqual([join(root, 'usr/share/OVMF/UEFI.fd')]);
  expect(r.copied).toEqual([join(root, 'var/lib/libvirt/qemu/nvram/vm1_VARS.fd')]);
  expect(log.counts.errors).toBe(1);
  expect(log.at('ERROR')[0]).toMatch(/^Failed to restore boot file \[\/usr\/share\/OVMF\/UEFI\.fd\] to \[.*UEFI\.fd\]: /);
  expect(tree(root)).toEqual(['usr/share/OVMF', 'var/lib/libvirt/qemu/nvram/vm1_VARS.fd']);
});
