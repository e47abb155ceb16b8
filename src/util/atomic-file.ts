/**
 * Crash-safe file publication: a file is written under a temporary name in its final directory,
 * fsynced, then given its final name, and the directory is fsynced; a reader never sees a half
 * written file under a final name. `publishNoReplace` never replaces an existing file (data
 * files, FORMAT.md §6.2 notes); `writeFileAtomic` replaces (state files such as `<domain>.cpt`).
 */
import { link, lstat, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export class FileExistsError extends Error {
  constructor(readonly path: string) {
    super(`${path} already exists; not replacing it`);
    this.name = 'FileExistsError';
  }
}

export async function pathExists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/** fsync a directory (ignored where the file system cannot). */
/** fsync a file's data (opened read-write, as some file systems require). */
export async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw e;
  } finally {
    await fh.close();
  }
}

/** Gives `src` the name `dst`, failing with FileExistsError if `dst` exists (hard link + unlink; rename where links are unsupported). */
export async function publishNoReplace(src: string, dst: string): Promise<void> {
  try {
    await link(src, dst);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new FileExistsError(dst);
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS' && code !== 'EMLINK') throw e;
    if (await pathExists(dst)) throw new FileExistsError(dst);
    await rename(src, dst);
    return;
  }
  await unlink(src);
}

/** Writes `content` to `path` atomically (temp file in the same directory, fsync, rename, dir fsync). */
export async function writeFileAtomic(path: string, content: string | Uint8Array, opts: { replace?: boolean; mode?: number } = {}): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${Date.now().toString(36)}.tmp`);
  const fh = await open(tmp, 'wx', opts.mode ?? 0o600);
  try {
    await fh.writeFile(content);
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await fh.close();
  try {
    if (opts.replace === false) await publishNoReplace(tmp, path);
    else await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await syncDir(dir);
}
