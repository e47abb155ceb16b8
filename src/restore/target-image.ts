/**
 * The image a disk is restored into (BEHAVIOUR.md §11.5): `qemu-img create` of `<target>.partial`
 * with the size of the selected point and the options of the point's qcow.json (FORMAT.md §6.6,
 * only members that are present and valid, §9 check 22), renamed to `<target>` without replacing
 * anything once the data is in (D10), or removed when the restore fails.
 *
 * qcow2 `data_file` (D24): the external data file is always `<output dir>/<base name>`, never the
 * path recorded in the qcow.json, and an existing file of that name is refused. It is reserved
 * (created empty, exclusively) before qemu-img runs and referenced by its absolute path, so the
 * image header stays valid when `<target>.partial` is renamed; on failure it is removed too.
 */
import { open, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { execa } from 'execa';
import type { Logger } from '../log/logger.js';
import { FileExistsError, fsyncFile, pathExists, publishNoReplace, syncDir } from '../util/atomic-file.js';
import { isPlainName } from '../util/safe-path.js';
import { dropPartialOwner, markPartialOwner, partialExistsMessage, partialWriterAlive, reclaimDeadPartial } from './partial-owner.js';
import { FileTooLargeError, MAX_QCOW_JSON_FILE, readTextCapped } from '../util/read-capped.js';

export type ImageFormat = 'qcow2' | 'qcow' | 'raw';

/** Any failure to create or publish the target image; the message is meant for the user. */
export class TargetImageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TargetImageError';
  }
}

/** The options of a qcow.json that are used to recreate the image, all validated. */
export interface QcowOptions {
  compat?: '0.10' | '1.1';
  clusterSize?: number;
  lazyRefcounts?: boolean;
  compressionType?: 'zlib' | 'zstd';
  /** Base name of the original external data file (already reduced and checked). */
  dataFile?: string;
  dataFileRaw?: boolean;
  extendedL2?: boolean;
}

/** Validates a disk format from metadata or the vmconfig (`qcow2`, `qcow`, `raw`). */
export function validateFormat(format: string, source: string): ImageFormat {
  if (format === 'qcow2' || format === 'qcow' || format === 'raw') return format;
  throw new TargetImageError(`Unsupported disk format [${format}] in ${source}: expected qcow2, qcow or raw`);
}

export { isPlainName };

type Warn = (msg: string) => void;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The recreate options of a parsed qcow.json (FORMAT.md §6.6). Invalid values are ignored with a
 * warning (§9 check 22); absent members are simply not used.
 */
export function qcowOptionsFrom(json: unknown, file: string, warn: Warn): QcowOptions {
  const out: QcowOptions = {};
  if (!isObject(json)) {
    warn(`QCOW image config [${file}] is not a JSON object, will use default options.`);
    return out;
  }
  const bad = (member: string, v: unknown): void => warn(`Ignoring invalid value ${JSON.stringify(v)} of [${member}] in [${file}].`);
  const cs = json['cluster-size'];
  if (cs !== undefined) {
    if (typeof cs === 'number' && Number.isInteger(cs) && cs >= 512 && cs <= 2 * 1024 * 1024 && (cs & (cs - 1)) === 0) out.clusterSize = cs;
    else bad('cluster-size', cs);
  }
  const fs = json['format-specific'];
  const data = isObject(fs) && isObject(fs['data']) ? fs['data'] : undefined;
  if (fs !== undefined && data === undefined) warn(`Ignoring malformed [format-specific] in [${file}].`);
  if (data) {
    const compat = data['compat'];
    if (compat !== undefined) {
      if (compat === '0.10' || compat === '1.1') out.compat = compat;
      else bad('compat', compat);
    }
    const bool = (member: string, set: (v: boolean) => void): void => {
      const v = data[member];
      if (v === undefined) return;
      if (typeof v === 'boolean') set(v);
      else bad(member, v);
    };
    bool('lazy-refcounts', (v) => (out.lazyRefcounts = v));
    bool('data-file-raw', (v) => (out.dataFileRaw = v));
    bool('extended-l2', (v) => (out.extendedL2 = v));
    const ct = data['compression-type'];
    if (ct !== undefined) {
      if (ct === 'zlib' || ct === 'zstd') out.compressionType = ct;
      else bad('compression-type', ct);
    }
    const df = data['data-file'];
    if (df !== undefined) {
      const name = typeof df === 'string' ? basename(df) : '';
      if (typeof df === 'string' && isPlainName(name)) out.dataFile = name;
      else bad('data-file', df);
    }
  }
  if (out.dataFileRaw && out.dataFile === undefined) delete out.dataFileRaw;
  return out;
}

/** Reads and validates a qcow.json file (unreadable or unparsable → warning, default options). */
export async function readQcowJson(path: string, warn: Warn): Promise<QcowOptions> {
  let text: string;
  try {
    text = await readTextCapped(path, MAX_QCOW_JSON_FILE); // stat first: never read a huge file whole
  } catch (e) {
    if (e instanceof FileTooLargeError) warn(`QCOW image config [${path}] is larger than 1 MiB, will use default options.`);
    else warn(`Unable to read QCOW image config [${path}]: ${(e as Error).message}, will use default options.`);
    return {};
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    warn(`Unable to parse QCOW image config [${path}]: ${(e as Error).message}, will use default options.`);
    return {};
  }
  return qcowOptionsFrom(json, path, warn);
}

/** qemu option values: a comma is written as two (qemu's QemuOpts escaping). */
const optValue = (v: string): string => v.replace(/,/g, ',,');

export interface CreateArgs {
  format: ImageFormat;
  /** Absolute path of the file to create. */
  path: string;
  size: number;
  preallocate: boolean;
  /** qcow2 only; ignored for other formats. */
  qcow?: QcowOptions;
  /** Absolute path of the external data file (when qcow.dataFile is set). */
  dataFilePath?: string;
}

/** The `qemu-img create` argument vector (BEHAVIOUR.md §11.5); every option only when present and valid. */
export function qemuImgCreateArgs(a: CreateArgs): string[] {
  if (!a.path.startsWith('/')) throw new Error(`qemuImgCreateArgs: path must be absolute, got [${a.path}]`);
  const args = ['create', '-q', '-f', a.format, a.path, '-o', `size=${a.size}`];
  if (a.preallocate && a.format !== 'qcow') args.push('-o', 'preallocation=full');
  const q = a.format === 'qcow2' ? a.qcow : undefined;
  if (q) {
    if (q.compat !== undefined) args.push('-o', `compat=${q.compat}`);
    if (q.clusterSize !== undefined) args.push('-o', `cluster_size=${q.clusterSize}`);
    if (q.lazyRefcounts) args.push('-o', 'lazy_refcounts=on');
    if (q.compressionType !== undefined) args.push('-o', `compression_type=${q.compressionType}`);
    if (q.dataFile !== undefined && a.dataFilePath !== undefined) {
      if (!a.dataFilePath.startsWith('/')) throw new Error(`qemuImgCreateArgs: data file path must be absolute, got [${a.dataFilePath}]`);
      args.push('-o', `data_file=${optValue(a.dataFilePath)}`);
      if (q.dataFileRaw) args.push('-o', 'data_file_raw=on');
    }
    if (q.extendedL2) args.push('-o', 'extended_l2=on');
  }
  return args;
}

/** A created, not yet published target image. */
export interface TargetImage {
  /** Final absolute path. */
  path: string;
  /** Where the image is written until it is complete: `<path>.partial`. */
  partial: string;
  format: ImageFormat;
  size: number;
  /** Absolute path of the external data file we created, if any. */
  dataFile?: string;
}

export interface CreateTargetOptions {
  /** Output directory (must exist). */
  output: string;
  /** Base name of the image inside `output`. */
  name: string;
  format: ImageFormat;
  size: number;
  preallocate: boolean;
  qcow?: QcowOptions;
  log: Logger;
}

export const targetExistsMessage = (path: string): string => `Target file already exists: [${path}], won't overwrite.`;

/** Reserve `path` by creating it empty and exclusively; false when it exists. */
async function reserve(path: string): Promise<boolean> {
  try {
    const fh = await open(path, 'wx', 0o600);
    await fh.close();
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
}

/**
 * Creates `<output>/<name>.partial` with qemu-img. Refuses when `<output>/<name>` (or the partial
 * file, or the external data file) exists; nothing existing is ever touched.
 */
export async function createTarget(o: CreateTargetOptions): Promise<TargetImage> {
  if (!isPlainName(o.name)) throw new TargetImageError(`Invalid target image name [${o.name}]`);
  if (!Number.isSafeInteger(o.size) || o.size < 0) throw new TargetImageError(`Invalid virtual size ${o.size}`);
  const dir = resolve(o.output);
  const path = join(dir, o.name);
  const partial = `${path}.partial`;
  if (await pathExists(path)) throw new TargetImageError(targetExistsMessage(path));
  // a partial image of a dead restore (partial-owner.ts) is removed; any other is refused
  if (!(await reserve(partial)) && !(reclaimDeadPartial(partial, o.log) && (await reserve(partial)))) {
    throw new TargetImageError(partialExistsMessage(partial, partialWriterAlive(partial)));
  }
  await markPartialOwner(partial);
  const target: TargetImage = { path, partial, format: o.format, size: o.size };
  try {
    const qcow = o.format === 'qcow2' ? o.qcow : undefined;
    if (qcow?.dataFile !== undefined) {
      const df = join(dir, qcow.dataFile);
      if (df === path || df === partial) throw new TargetImageError(`External data file [${df}] would be the image itself`);
      if (!(await reserve(df))) throw new TargetImageError(`Data file already exists: [${df}], won't overwrite.`);
      target.dataFile = df;
      await markPartialOwner(partial, df);
    }
    const args = qemuImgCreateArgs({ format: o.format, path: partial, size: o.size, preallocate: o.preallocate, qcow, dataFilePath: target.dataFile });
    o.log.debug(`qemu-img ${args.join(' ')}`);
    const r = await execa('qemu-img', args, { reject: false, stdin: 'ignore', all: true });
    if (r.exitCode !== 0) {
      throw new TargetImageError(`Creating target image failed: qemu-img create ${partial} (exit ${r.exitCode ?? r.signal}): ${String(r.all ?? '').trim()}`);
    }
    return target;
  } catch (e) {
    await abortTarget(target);
    throw e;
  }
}


/** fsync the image (and data file), rename `<target>.partial` → `<target>` without replacing, fsync the directory. */
export async function finishTarget(t: TargetImage): Promise<void> {
  if (t.dataFile) await fsyncFile(t.dataFile);
  await fsyncFile(t.partial);
  try {
    await publishNoReplace(t.partial, t.path);
  } catch (e) {
    if (e instanceof FileExistsError) throw new TargetImageError(targetExistsMessage(t.path));
    throw e;
  }
  await syncDir(dirname(t.path));
  dropPartialOwner(t.partial);
}

/** Removes the partial image and the data file we created (never the final name). Never rejects. */
export async function abortTarget(t: TargetImage): Promise<void> {
  for (const p of [t.partial, t.dataFile]) {
    if (p === undefined) continue;
    await unlink(p).catch(() => undefined);
  }
  dropPartialOwner(t.partial);
}
