/**
 * Path safety (issue 10): names taken from backup metadata or a vmconfig (disk targets, boot file
 * names, checkpoint names, data-file names) never lead a write outside the directory the user
 * chose, and a symlink planted in that directory is never followed when we create or change a
 * file there.
 *
 * - Names are plain names (isPlainName): no `/`, not `.`/`..`, no NUL; childPath joins them.
 * - Files are created with O_NOFOLLOW (and O_EXCL where nothing may be replaced), and their mode
 *   is set through the descriptor (fchmod), never by path.
 * - Existing path components between the chosen directory and a file are checked not to be
 *   symlinks (assertNoSymlinksBelow); a symlink there is refused with UnsafePathError.
 */
import { closeSync, constants, fchmodSync, fstatSync, lstatSync, openSync, readSync, writeSync } from 'node:fs';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';

export class UnsafePathError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnsafePathError';
  }
}

/** True when `name` is a plain file name usable inside a directory the user chose (FORMAT.md §9). */
export function isPlainName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0');
}

/** `dir/name` for a plain `name`; otherwise UnsafePathError naming `what` (e.g. `disk target`). */
export function childPath(dir: string, name: string, what: string): string {
  if (!isPlainName(name)) throw new UnsafePathError(`Refusing ${what} [${name}]: not a plain file name`);
  return join(dir, name);
}

/** True when `path` is `root` or below it (lexically, after resolving both). */
export function isInside(root: string, path: string): boolean {
  const rel = relative(resolve(root), resolve(path));
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/** UnsafePathError when `path` exists as a symlink (a missing path is fine). */
export function assertNoSymlink(path: string): void {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return; // nothing there (the write fails on its own)
    throw e;
  }
  if (st.isSymbolicLink()) throw new UnsafePathError(`Refusing to use [${path}]: it is a symbolic link`);
}

/**
 * UnsafePathError unless `path` lies below `root` and no existing component from `root`
 * (exclusive) down to `path` (inclusive) is a symlink.
 */
export function assertNoSymlinksBelow(root: string, path: string): void {
  const r = resolve(root);
  const p = resolve(path);
  if (!isInside(r, p) || p === r) throw new UnsafePathError(`Refusing [${path}]: not below [${root}]`);
  let cur = r;
  for (const part of relative(r, p).split(sep)) {
    cur = join(cur, part);
    assertNoSymlink(cur);
  }
}

const NOFOLLOW_WRITE = constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW;

function openForWrite(path: string, exclusive: boolean, mode: number): number {
  try {
    return openSync(path, NOFOLLOW_WRITE | (exclusive ? constants.O_EXCL : constants.O_TRUNC), mode);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw new UnsafePathError(`Refusing to write [${path}]: it is a symbolic link`);
    throw e;
  }
}

function writeAll(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off, data.length - off);
}

/**
 * Write `data` to `path` without following a symlink there (replacing a regular file's contents,
 * or, with `exclusive`, only creating), then set `mode` through the descriptor.
 */
export function writeFileNoFollow(path: string, data: string | Uint8Array, mode: number, exclusive = false): void {
  const fd = openForWrite(path, exclusive, mode);
  try {
    if (!fstatSync(fd).isFile()) throw new UnsafePathError(`Refusing to write [${path}]: not a regular file`);
    writeAll(fd, typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
    fchmodSync(fd, mode);
  } finally {
    closeSync(fd);
  }
}

/** Copy the regular file `src` to `dest` without following a symlink at `dest`; `mode` set through the descriptor. */
export function copyFileNoFollow(src: string, dest: string, mode: number): void {
  const from = openSync(src, constants.O_RDONLY);
  try {
    if (!fstatSync(from).isFile()) throw new UnsafePathError(`Refusing to copy [${src}]: not a regular file`);
    const to = openForWrite(dest, false, mode);
    try {
      if (!fstatSync(to).isFile()) throw new UnsafePathError(`Refusing to write [${dest}]: not a regular file`);
      const buf = Buffer.allocUnsafe(1 << 20);
      for (;;) {
        const n = readSync(from, buf, 0, buf.length, null);
        if (n === 0) break;
        writeAll(to, buf.subarray(0, n));
      }
      fchmodSync(to, mode);
    } finally {
      closeSync(to);
    }
  } finally {
    closeSync(from);
  }
}
