/** src/util/safe-path.ts, read-capped.ts and safe-defaults.ts on the real file system. */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  assertNoSymlink,
  assertNoSymlinksBelow,
  childPath,
  copyFileNoFollow,
  isInside,
  isPlainName,
  UnsafePathError,
  writeFileNoFollow,
} from '../../../src/util/safe-path.js';
import { FileTooLargeError, readTextCapped, readTextCappedSync } from '../../../src/util/read-capped.js';
import { PASSWORD_ENV, PasswordSourceError, resolvePassword, restrictUmask } from '../../../src/util/safe-defaults.js';
import { restoreBootFiles } from '../../../src/restore/boot-files.js';
import { createLogger } from '../../../src/log/logger.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'virtnbd-safepath-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const mode = (p: string): string => (statSync(p).mode & 0o777).toString(8);

test('plain names and children', () => {
  for (const n of ['vda', 'vda.qcow2', '.hidden', 'a..b']) expect(isPlainName(n)).toBe(true);
  for (const n of ['', '.', '..', '../x', 'a/b', '/abs', 'x\0y']) expect(isPlainName(n)).toBe(false);
  expect(childPath('/out', 'vda.qcow2', 'disk target')).toBe('/out/vda.qcow2');
  expect(() => childPath('/out', '../etc/passwd', 'disk target')).toThrow('Refusing disk target [../etc/passwd]: not a plain file name');
  expect(isInside('/out', '/out/a/b')).toBe(true);
  expect(isInside('/out', '/out')).toBe(true);
  expect(isInside('/out', '/out/../etc')).toBe(false);
  expect(isInside('/out', '/outside')).toBe(false);
  expect(isInside('/out', '/out/..x')).toBe(true);
});

test('writes and copies never follow a planted symlink', () => {
  const victim = join(dir, 'victim');
  writeFileSync(victim, 'precious', { mode: 0o600 });
  const link = join(dir, 'domain.xml');
  symlinkSync(victim, link);
  expect(() => assertNoSymlink(link)).toThrow(UnsafePathError);
  expect(() => writeFileNoFollow(link, 'evil', 0o666)).toThrow(/is a symbolic link/);
  const src = join(dir, 'src');
  writeFileSync(src, 'boot file');
  expect(() => copyFileNoFollow(src, link, 0o666)).toThrow(/is a symbolic link/);
  expect(readFileSync(victim, 'utf8')).toBe('precious');
  expect(mode(victim)).toBe('600');
  // a dangling link too (O_CREAT would create its target)
  const dangling = join(dir, 'dangling');
  symlinkSync(join(dir, 'created-elsewhere'), dangling);
  expect(() => writeFileNoFollow(dangling, 'x', 0o600, true)).toThrow();
  expect(() => statSync(join(dir, 'created-elsewhere'))).toThrow();
  // the ordinary case
  const ok = join(dir, 'ok');
  copyFileNoFollow(src, ok, 0o640);
  expect([readFileSync(ok, 'utf8'), mode(ok)]).toEqual(['boot file', '640']);
  writeFileNoFollow(ok, 'new', 0o600);
  expect([readFileSync(ok, 'utf8'), mode(ok)]).toEqual(['new', '600']);
});

test('no symlink between a root and a path below it', () => {
  mkdirSync(join(dir, 'root', 'usr'), { recursive: true });
  mkdirSync(join(dir, 'elsewhere'));
  symlinkSync(join(dir, 'elsewhere'), join(dir, 'root', 'usr', 'share'));
  expect(() => assertNoSymlinksBelow(join(dir, 'root'), join(dir, 'root', 'usr', 'share', 'OVMF', 'x.fd'))).toThrow(/is a symbolic link/);
  expect(() => assertNoSymlinksBelow(join(dir, 'root'), join(dir, 'root', 'usr', 'lib', 'x'))).not.toThrow();
  expect(() => assertNoSymlinksBelow(join(dir, 'root'), join(dir, 'root', '..', 'x'))).toThrow(/not below/);
});

test('restoreBootFiles below a root refuses a planted symlink and writes nothing through it', async () => {
  const input = join(dir, 'backup');
  mkdirSync(input);
  writeFileSync(join(input, 'vmlinuz.virtnbdbackup.0'), 'kernel');
  const root = join(dir, 'root');
  mkdirSync(join(root, 'boot'), { recursive: true });
  mkdirSync(join(dir, 'elsewhere'));
  symlinkSync(join(dir, 'elsewhere'), join(root, 'boot', 'evil'));
  const xml = `<domain type='kvm'><name>vm</name><os><type>hvm</type><kernel>/boot/evil/vmlinuz</kernel></os><devices/></domain>`;
  const log = createLogger({ stderr: false, color: false, verbose: false });
  const r = await restoreBootFiles(input, xml, 'virtnbdbackup.0', log, { root });
  expect(r.copied).toEqual([]);
  expect(r.skipped).toEqual([join(root, 'boot', 'evil', 'vmlinuz')]);
  expect(() => statSync(join(dir, 'elsewhere', 'vmlinuz'))).toThrow();
  // without the link the same file is restored
  rmSync(join(root, 'boot', 'evil'));
  const ok = await restoreBootFiles(input, xml, 'virtnbdbackup.0', log, { root });
  expect(ok.copied).toEqual([join(root, 'boot', 'evil', 'vmlinuz')]);
});

test('capped reads refuse large files before reading them', async () => {
  const f = join(dir, 'big.xml');
  writeFileSync(f, Buffer.alloc(2048, 0x41));
  await expect(readTextCapped(f, 1024)).rejects.toBeInstanceOf(FileTooLargeError);
  expect(() => readTextCappedSync(f, 1024)).toThrow(FileTooLargeError);
  expect((await readTextCapped(f, 4096)).length).toBe(2048);
  // a FIFO-like endless source is cut at the cap: /dev/zero
  await expect(readTextCapped('/dev/zero', 4096)).rejects.toBeInstanceOf(FileTooLargeError);
});

test('password sources: option, file, environment; the variable is removed from the environment', () => {
  const env: NodeJS.ProcessEnv = { [PASSWORD_ENV]: 'from-env', OTHER: 'x' };
  expect(resolvePassword({}, env)).toEqual({ password: 'from-env', source: 'environment' });
  expect(env).toEqual({ OTHER: 'x' });
  const pw = join(dir, 'pw');
  writeFileSync(pw, 'from-file\r\nsecond line\n', { mode: 0o600 });
  chmodSync(pw, 0o600);
  expect(resolvePassword({ passwordFile: pw }, { [PASSWORD_ENV]: 'e' })).toEqual({ password: 'from-file', source: 'file' });
  chmodSync(pw, 0o644);
  expect(resolvePassword({ passwordFile: pw }, {}).warning).toMatch(/can be read by other users \(mode 644\)/);
  expect(resolvePassword({ password: 'argv' }, { [PASSWORD_ENV]: 'e' })).toEqual({ password: 'argv', source: 'option' });
  expect(() => resolvePassword({ password: 'a', passwordFile: pw }, {})).toThrow(PasswordSourceError);
  writeFileSync(join(dir, 'empty'), '\n');
  expect(() => resolvePassword({ passwordFile: join(dir, 'empty') }, {})).toThrow(/is empty/);
  expect(() => resolvePassword({ passwordFile: dir }, {})).toThrow(/not a regular file/);
  expect(resolvePassword({}, {})).toEqual({});
});

test('restrictUmask adds 077 and never loosens', () => {
  const before = process.umask();
  try {
    process.umask(0o022);
    restrictUmask();
    expect(process.umask()).toBe(0o077);
    process.umask(0o277);
    restrictUmask();
    expect(process.umask()).toBe(0o277);
  } finally {
    process.umask(before);
  }
});
