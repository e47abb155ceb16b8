/**
 * Boot files of a restore (BEHAVIOUR.md §11.8, "Ours" column; FORMAT.md §6.7): for each
 * `os/loader`, `os/nvram`, `os/kernel`, `os/initrd` path of the used vmconfig, the backup's copy
 * is found by its exact name — `<basename>.<ident>` of the restored point, `<basename>` for a copy
 * set — else the copy of the newest earlier point of the chain (`earlierIdents`, newest first).
 * Never a substring match (D32: `UEFI.fd` is not `UEFI.fd.bak`).
 *
 * Destination: the original absolute path, or — extension — the same path below `root`
 * (`<root>/<original path>`, e.g. to inspect a restore without touching the host's files). The
 * original path must be absolute and normalised (no `.`/`..` segments, no doubled or trailing
 * slash); other paths are refused with an error. An existing destination is never overwritten
 * (INFO, skipped). The copy is written to a temporary name in the destination directory, synced,
 * and given its final name without replacing anything (hard link, so a file appearing meanwhile
 * is not replaced either); missing parent directories are created.
 *
 * Remote restores (BEHAVIOUR.md §8, §11.8) pass a {@link BootFileTarget} that checks and writes
 * the destination on the remote host (through ssh) with the same no-replace rule.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, lstat, mkdir, open, unlink } from 'node:fs/promises';
import { basename, dirname, join, posix, resolve } from 'node:path';
import { parseDomainXml } from '../xml/domain-xml.js';
import type { Logger } from '../log/logger.js';
import { FileExistsError, pathExists, publishNoReplace, syncDir } from '../util/atomic-file.js';
import { assertNoSymlinksBelow } from '../util/safe-path.js';
import { errorMessage } from '../util/error-message.js';

/** Where boot files are restored to: the local file system (default) or a remote host. */
export interface BootFileTarget {
  /** True when `dest` exists (any file type). */
  exists(dest: string): Promise<boolean>;
  /**
   * Copies the local file `src` to `dest` (parents created), never replacing: rejects with
   * FileExistsError when `dest` exists.
   */
  copyNoReplace(src: string, dest: string): Promise<void>;
  /** Shown in log lines, e.g. ` on the remote host`. */
  where?: string;
}

export interface BootFilesOptions {
  /** Remote restore: write the destinations there. */
  target?: BootFileTarget;
  /** Extension: restore below this directory instead of at the original paths. */
  root?: string;
  /** Idents of the earlier points of the restored chain, newest first (fallback copies). */
  earlierIdents?: string[];
}

export interface BootFilesResult {
  /** Destination paths written. */
  copied: string[];
  /** Destination paths (or refused original paths) not written: existing, no backup copy, refused, failed. */
  skipped: string[];
}

const IDENT_RE = /^[A-Za-z0-9_.-]+$/;

/** An absolute, normalised path with a usable file name. */
function isSafeAbsolute(p: string): boolean {
  if (!p.startsWith('/') || p.includes('\0') || p.endsWith('/')) return false;
  if (posix.normalize(p) !== p) return false;
  const base = posix.basename(p);
  return base !== '' && base !== '.' && base !== '..' && !p.split('/').includes('..');
}

/** The name of the boot file's copy in the backup for one ident (null/`copy`: a copy set). */
function copyName(base: string, ident: string | null): string | undefined {
  if (ident === null || ident === 'copy') return base;
  if (!IDENT_RE.test(ident) || ident === '.' || ident === '..') return undefined;
  return `${base}.${ident}`;
}

async function isRegularFile(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isFile();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/** Copy `src` to `dest` under a temporary name, then publish without replacing. */
async function copyNoReplace(src: string, dest: string): Promise<void> {
  const dir = dirname(dest);
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${basename(dest)}.${process.pid}.${randomBytes(4).toString('hex')}.partial`);
  try {
    await copyFile(src, tmp, constants.COPYFILE_EXCL);
    const fh = await open(tmp, 'r+');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await publishNoReplace(tmp, dest);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await syncDir(dir);
}

/**
 * Name (in `input`) of the backup's copy of the boot file `original` for the first of `idents`
 * that has one (null in `idents`: a copy set), or undefined. Also used by boot from backup.
 */
export async function findBootFileCopy(
  input: string,
  original: string,
  idents: ReadonlyArray<string | null>,
  log: Pick<Logger, 'debug' | 'info'>,
): Promise<string | undefined> {
  const base = posix.basename(original);
  for (const [i, id] of idents.entries()) {
    const name = copyName(base, id);
    if (name === undefined) {
      log.debug(`Ignoring invalid ident [${String(id)}] when looking for boot file [${base}].`);
      continue;
    }
    if (await isRegularFile(join(input, name))) {
      if (i > 0) log.info(`No copy of boot file [${original}] for this backup point, using [${name}] of an earlier one.`);
      return name;
    }
  }
  return undefined;
}

/** One boot file; true when it was copied. Unexpected file system errors are thrown. */
async function restoreOne(input: string, original: string, dest: string, idents: Array<string | null>, log: Logger, target: BootFileTarget): Promise<boolean> {
  const found = await findBootFileCopy(input, original, idents, log);
  if (found === undefined) {
    log.warn(`Unable to identify backup file for [${original}] in specified backup folder [${input}]`);
    return false;
  }
  const src = join(input, found);
  const where = target.where ?? '';
  if (await target.exists(dest)) {
    log.info(`File [${dest}] already exists${where}, skipping.`);
    return false;
  }
  try {
    await target.copyNoReplace(src, dest);
  } catch (e) {
    if (!(e instanceof FileExistsError)) throw e;
    log.info(`File [${dest}] already exists${where}, skipping.`);
    return false;
  }
  log.info(`Restored boot file [${src}] to [${dest}]${where}`);
  return true;
}

/**
 * Restore the boot files named in `vmconfigXml` from the backup directory `input` for the point
 * `ident` (null for a copy set). Problems are logged (missing copy: warning; refused path or
 * failed copy: error) and never thrown, except for an unparsable `vmconfigXml`.
 */
export async function restoreBootFiles(
  input: string,
  vmconfigXml: string,
  ident: string | null,
  log: Logger,
  opts: BootFilesOptions = {},
): Promise<BootFilesResult> {
  const { bootFiles } = parseDomainXml(vmconfigXml);
  const result: BootFilesResult = { copied: [], skipped: [] };
  const idents = [ident, ...(opts.earlierIdents ?? [])];
  const root = opts.root !== undefined ? resolve(opts.root) : undefined;

  for (const key of ['loader', 'nvram', 'kernel', 'initrd'] as const) {
    const original = bootFiles[key];
    if (original === undefined) continue;
    if (!isSafeAbsolute(original)) {
      log.error(`Refusing to restore boot file [${original}]: the path must be absolute and normalised.`);
      result.skipped.push(original);
      continue;
    }
    const dest = root !== undefined ? join(root, original) : original;
    if (root !== undefined) {
      try {
        assertNoSymlinksBelow(root, dest); // a symlink planted below the root (src/util/safe-path.ts)
      } catch (e) {
        log.error(`Refusing to restore boot file [${original}] to [${dest}]: ${errorMessage(e)}`);
        result.skipped.push(dest);
        continue;
      }
    }

    try {
      if (await restoreOne(input, original, dest, idents, log, opts.target ?? { exists: pathExists, copyNoReplace })) result.copied.push(dest);
      else result.skipped.push(dest);
    } catch (e) {
      log.error(`Failed to restore boot file [${original}] to [${dest}]: ${errorMessage(e)}`);
      result.skipped.push(dest);
    }
  }
  return result;
}
