/**
 * Reading the small text files of a backup set (vmconfig and checkpoint XML, `.cpt`, `.qcow.json`)
 * with a size cap, so that a huge or endless file (a planted FIFO, /dev/zero behind a symlink, a
 * multi-GiB file) cannot make us allocate without bound (issue 10, fuzz/README.md "Caps").
 */
import { readFileSync, statSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';

/** Cap of the XML files of a set (vmconfig, checkpoint XML): libvirt's own limit is 10 MiB. */
export const MAX_XML_FILE = 16 * 1024 * 1024;
/** Cap of `<domain>.cpt` (about 800 000 checkpoint names). */
export const MAX_CPT_FILE = 16 * 1024 * 1024;
/** Cap of a `*.qcow.json` (qemu-img info output: a few hundred bytes). */
export const MAX_QCOW_JSON_FILE = 1024 * 1024;

export class FileTooLargeError extends Error {
  constructor(
    readonly path: string,
    readonly size: number,
    readonly max: number,
  ) {
    super(`${path}: ${size} bytes or more, larger than the limit of ${max} bytes for this kind of file`);
    this.name = 'FileTooLargeError';
  }
}

function tooLarge(path: string, size: number, max: number): FileTooLargeError {
  return new FileTooLargeError(path, size, max);
}

/** The UTF-8 text of the regular file `path`, refused when larger than `max` bytes. */
export async function readTextCapped(path: string, max: number): Promise<string> {
  const st = await stat(path);
  if (st.isFile() && st.size > max) throw tooLarge(path, st.size, max);
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(Math.min(max, st.isFile() ? st.size : max) + 1);
    let got = 0;
    while (got < buf.length) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, null);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got > max) throw tooLarge(path, got, max);
    return buf.toString('utf8', 0, got);
  } finally {
    await fh.close();
  }
}

/** Synchronous readTextCapped (for a regular file only). */
export function readTextCappedSync(path: string, max: number): string {
  const st = statSync(path);
  if (!st.isFile()) throw new Error(`${path}: not a regular file`);
  if (st.size > max) throw tooLarge(path, st.size, max);
  return readFileSync(path, 'utf8');
}
