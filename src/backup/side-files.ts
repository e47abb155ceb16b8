/**
 * The side files of a backup run (BEHAVIOUR.md §7.3, §10.2, §10.4; FORMAT.md §6.5–6.8):
 * `vmconfig.<ident>.xml`, boot file copies, `<dev>.<ident>.qcow.json`, `autostart.<ident>`,
 * `osinfo.<ident>`.
 *
 * They are written through a {@link SideFileSink} so the same code serves directory mode and,
 * later, the zip archive on stdout (FORMAT.md §7). The directory sink publishes every file
 * atomically (temporary name in the target directory, fsync, rename, directory fsync); side
 * files are replaced if they exist, unlike data files. Failures that §7.3 calls warnings (boot
 * file, qcow info) are logged here; the others reject.
 */
import { constants as fsConstants } from 'node:fs';
import { copyFile, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import type { Logger } from '../log/logger.js';
import { pyJsonDumps } from '../saveset/pyjson.js';
import { syncDir } from '../util/atomic-file.js';
import type { BackupDisk } from './types.js';
import type { BootFiles } from '../xml/domain-types.js';

/** Where side files go: a backup directory or an archive. Names are plain base names. */
export interface SideFileSink {
  writeFile(name: string, content: Buffer | string, mtime?: Date): Promise<void>;
  /** Copy the local file `sourcePath` under `name`. */
  copyFile(name: string, sourcePath: string): Promise<void>;
}

/** A side file name must be a plain base name (no directory part, not `.`/`..`, no NUL). */
export function checkSideFileName(name: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new Error(`Invalid side file name [${name}]`);
  }
}

/**
 * Writes side files into `dir` atomically: `.<name>.<random>.tmp` in `dir`, fsync, rename over
 * `<name>`, fsync of `dir`. A failed write leaves no temporary file behind.
 */
export function directorySink(dir: string): SideFileSink {
  const publish = async (name: string, fill: (tmp: string) => Promise<FileHandle>, mtime?: Date): Promise<void> => {
    checkSideFileName(name);
    const final = join(dir, name);
    const tmp = join(dir, `.${name}.${randomBytes(6).toString('hex')}.tmp`);
    let fh: FileHandle | undefined;
    try {
      fh = await fill(tmp);
      if (mtime) await fh.utimes(mtime, mtime);
      await fh.sync();
      await fh.close();
      fh = undefined;
      await rename(tmp, final);
    } catch (e) {
      await fh?.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      throw e;
    }
    await syncDir(dir);
  };
  return {
    writeFile: (name, content, mtime) =>
      publish(
        name,
        async (tmp) => {
          const fh = await open(tmp, 'wx', 0o600);
          try {
            await fh.writeFile(content);
          } catch (e) {
            await fh.close().catch(() => undefined);
            throw e;
          }
          return fh;
        },
        mtime,
      ),
    copyFile: (name, sourcePath) =>
      publish(name, async (tmp) => {
        await copyFile(sourcePath, tmp, fsConstants.COPYFILE_EXCL);
        return open(tmp, 'r+');
      }),
  };
}

function reason(e: unknown): string {
  if (e instanceof Error) {
    const stderr = (e as { stderr?: unknown }).stderr;
    if (typeof stderr === 'string' && stderr.trim() !== '') return stderr.trim();
    return e.message;
  }
  return String(e);
}

/** FORMAT.md §6.5: the domain XML fetched at the start of the run, verbatim. */
export async function writeVmconfig(sink: SideFileSink, ident: string, xml: string): Promise<string> {
  const name = `vmconfig.${ident}.xml`;
  await sink.writeFile(name, xml);
  return name;
}

export interface BootFileOptions {
  /** Remote mode: fetch the file's bytes (SFTP) instead of copying a local file. */
  fetch?: (path: string) => Promise<Buffer>;
}

/**
 * FORMAT.md §6.7: copy each of `os/loader`, `os/nvram`, `os/kernel`, `os/initrd` as
 * `<basename>.<ident>`, or as `<basename>` when `ident` is null (copy runs). A failure is a
 * warning. Returns the names written.
 */
export async function copyBootFiles(sink: SideFileSink, boot: BootFiles, ident: string | null, log: Logger, opts: BootFileOptions = {}): Promise<string[]> {
  const written: string[] = [];
  for (const key of ['loader', 'nvram', 'kernel', 'initrd'] as const) {
    const path = boot[key];
    if (path === undefined) continue;
    const base = basename(path);
    const name = ident === null ? base : `${base}.${ident}`;
    try {
      if (opts.fetch) await sink.writeFile(name, await opts.fetch(path));
      else await sink.copyFile(name, path);
      log.info(`Saved boot file [${path}] (${key}) as [${name}]`);
      written.push(name);
    } catch (e) {
      log.warn(`Failed to save boot file [${path}] (${key}): [${reason(e)}]`);
    }
  }
  return written;
}

export interface QcowInfoOptions {
  /**
   * Runs `qemu-img info <path> --output json --force-share` and resolves to its stdout (remote
   * mode: through ssh with the path quoted). Default: local qemu-img through execa.
   */
  qemuImgInfo?: (path: string) => Promise<string>;
}

async function localQemuImgInfo(path: string): Promise<string> {
  const r = await execa('qemu-img', ['info', path, '--output', 'json', '--force-share'], { stripFinalNewline: false });
  return r.stdout;
}

/**
 * FORMAT.md §6.6: `<dev>.<ident>.qcow.json` for every qcow disk, the output of qemu-img info
 * without its final newline. A failure is the warning `Failed to read qcow image info: [<reason>]`.
 * Returns the names written.
 */
export async function writeQcowInfo(sink: SideFileSink, disks: BackupDisk[], ident: string, log: Logger, opts: QcowInfoOptions = {}): Promise<string[]> {
  const run = opts.qemuImgInfo ?? localQemuImgInfo;
  const written: string[] = [];
  for (const disk of disks) {
    if (!disk.qcow) continue;
    const name = `${disk.dev}.${ident}.qcow.json`;
    let json: string;
    try {
      json = (await run(disk.path)).replace(/\r?\n$/, '');
      JSON.parse(json); // qemu-img printing something else is a failure too
    } catch (e) {
      log.warn(`Failed to read qcow image info: [${reason(e)}]`);
      continue;
    }
    await sink.writeFile(name, json);
    log.info(`Saved qcow image config to: [${name}]`);
    written.push(name);
  }
  return written;
}

/** FORMAT.md §6.8: `autostart.<ident>` holding the 4 bytes `True`. */
export async function writeAutostart(sink: SideFileSink, ident: string): Promise<string> {
  const name = `autostart.${ident}`;
  await sink.writeFile(name, 'True');
  return name;
}

/** A number as Python's json module prints the int or float it would have been given. */
function pyNumber(v: number): string {
  if (Number.isSafeInteger(v)) return Object.is(v, -0) ? '0' : String(v);
  if (!Number.isFinite(v)) return Number.isNaN(v) ? 'NaN' : v > 0 ? 'Infinity' : '-Infinity';
  if (Number.isInteger(v)) return BigInt(v).toString(); // unsigned long long beyond 2^53
  return String(v);
}

/** The guest-info typed parameters as `json.dumps(info, indent=4)` (FORMAT.md §2.5, §6.8). */
export function formatOsinfo(info: Record<string, number | string | boolean>): string {
  return pyJsonDumps(info, 4, { number: pyNumber });
}

/** FORMAT.md §6.8: `osinfo.<ident>`, the agent's guest-info result as indented JSON. */
export async function writeOsinfo(sink: SideFileSink, ident: string, info: Record<string, number | string | boolean>): Promise<string> {
  const name = `osinfo.${ident}`;
  await sink.writeFile(name, formatOsinfo(info));
  return name;
}
