/**
 * Restore one disk (BEHAVIOUR.md §11.2–§11.6, §11.9): resolve its chain (newest point, `--until`,
 * or `--sequence`), print every applied file's metadata as JSON, create `<output>/<name>.partial`
 * with the newest file's virtual size and the point's qcow.json options, copy the resolved data
 * sparsely into it, and rename it to `<output>/<name>` without replacing anything. Any failure
 * removes the partial image (and an external data file created for it) and rejects with a
 * {@link RestoreError} whose message says what failed.
 *
 * Resized disks: the image gets the virtual size of the selected point; the resolver drops older
 * data beyond any later, smaller size (src/chain/resize.ts, resolve.ts); each resize is logged.
 * With `compress` (`--compress`) a qcow2 image is written with compressed clusters (copy-chain.ts);
 * where that is impossible (other formats, external data file, preallocation, a size that is not a
 * multiple of the cluster size) it is written uncompressed with an INFO line.
 *
 * With `raw` (`--raw`), a raw-format disk whose selected file is a plain raw image is copied
 * byte for byte (holes kept) instead: no qemu-img, no NBD.
 */
import { open, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { execa } from 'execa';
import { chainFromDir, discoverBackupDir, resolveSelected, type Chain, type ChainFile } from '../chain/index.js';
import { isRawImageFile } from '../chain/data-file.js';
import { sizeChanges } from '../chain/resize.js';
import { dataBytes, type ExtentMap } from '../chain/extent-map.js';
import type { Logger } from '../log/logger.js';
import { copyChain, type CopyMethod } from './copy-chain.js';
import { pointIdent, sequenceOf } from '../chain/point.js';
import {
  abortTarget,
  createTarget,
  finishTarget,
  readQcowJson,
  validateFormat,
  isPlainName,
  targetExistsMessage,
  TargetImageError,
  type ImageFormat,
  type QcowOptions,
  type TargetImage,
} from './target-image.js';
import { pathExists } from '../util/atomic-file.js';
import { faultPoint } from '../util/fault-point.js';
import { errorMessage } from '../util/error-message.js';
import { checkAborted } from '../util/abort.js';

export type RestoreStage = 'chain' | 'create' | 'copy' | 'publish';

/** A failed disk restore. `stage` tells where; nothing of the target is left behind. */
export class RestoreError extends Error {
  constructor(
    message: string,
    readonly stage: RestoreStage,
    readonly dev: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'RestoreError';
  }
}

export interface RestoreDiskOptions {
  /** Backup directory. */
  input: string;
  /** Output directory (must exist). */
  output: string;
  /** Disk target name (`vda`). */
  dev: string;
  /** Checkpoint, diff ident or data file name (BEHAVIOUR.md §11.3). */
  until?: string;
  /** Data file names relative to `input`, applied in this order (§11.4). */
  sequence?: string[];
  /** Base name of the restored image inside `output`. */
  targetName: string;
  /** Image format; default: the newest file's metadata `diskFormat`. Validated (qcow2, qcow, raw). */
  format?: string;
  /** The point's qcow.json (point.ts), or undefined (warning, default options). */
  qcowJson?: string;
  preallocate: boolean;
  /** `--raw`: copy raw-format disks' raw image files as they are. */
  raw: boolean;
  log: Logger;
  /** Data bytes written so far / total data bytes. */
  progress?: (done: number, total: number) => void;
  signal?: AbortSignal;
  /** Receives the metadata of each applied file as JSON (the CLI prints it to stdout). */
  printMeta?: (json: string, file: string) => void;
  /** qemu-nbd socket (`--socketfile`); default: a private temp path. */
  socket?: string;
  /** Copy method (copy-chain.ts); default `own`. */
  method?: CopyMethod;
  /** `--compress`: write compressed qcow2 clusters (qemu's compress driver); qcow2 targets only. */
  compress?: boolean;
}

export interface RestoreDiskResult {
  /** The published image. */
  path: string;
  virtualSize: number;
  /** Data bytes of the resolved point (what was written). */
  dataBytes: number;
  /** Bytes the image (and its external data file) occupy on disk. */
  allocatedBytes: number;
  seconds: number;
  /** The chain that was applied, oldest first. */
  files: string[];
  /** true when the raw image was copied as is (`--raw`). */
  rawCopy: boolean;
}

/** The chain to restore: the sequence, or the disk's chain in the directory. */
function selectChain(o: RestoreDiskOptions): Chain {
  if (o.sequence !== undefined) return sequenceOf(o.input, o.sequence, o.dev, o.until);
  return chainFromDir(o.input, { disk: o.dev, until: o.until });
}

/**
 * With `--raw`: the raw image file of a raw-format disk, or undefined when the disk is restored
 * through the chain. Raw disks have one raw image per base run (full/copy); when the disk has
 * nothing else that one is used whatever `until` says (it carries no checkpoints).
 */
function rawSource(o: RestoreDiskOptions, chain: Chain | undefined): ChainFile | undefined {
  if (!o.raw) return undefined;
  if (o.format !== undefined && o.format !== 'raw') return undefined;
  if (chain) {
    const last = chain.files[chain.files.length - 1];
    return chain.files.length === 1 && isRawImageFile(last.path) && last.metadata.diskFormat === 'raw' ? last : undefined;
  }
  if (o.sequence !== undefined) return undefined;
  const files = discoverBackupDir(o.input).disks.get(o.dev) ?? [];
  return files.length === 1 && isRawImageFile(files[0].path) ? files[0] : undefined;
}

async function allocated(paths: (string | undefined)[]): Promise<number> {
  let n = 0;
  for (const p of paths) if (p !== undefined) n += (await stat(p)).blocks * 512;
  return n;
}

/** What both the local and the remote restore of one disk need before the image is created. */
export interface ImagePlan {
  map: ExtentMap;
  last: ChainFile;
  virtualSize: number;
  format: ImageFormat;
  qcow?: QcowOptions;
}

/**
 * Resolve `chain` (validating every file), print each file's metadata (`printMeta`), log empty
 * deltas and resizes, and choose the image format and qcow2 options. Errors are RestoreErrors.
 */
export async function planImage(
  o: Pick<RestoreDiskOptions, 'dev' | 'format' | 'qcowJson' | 'input' | 'log' | 'printMeta'>,
  chain: Chain,
): Promise<ImagePlan> {
  const log = o.log;
  let resolved;
  try {
    resolved = resolveSelected(chain);
  } catch (e) {
    throw new RestoreError(errorMessage(e), 'chain', o.dev, { cause: e });
  }
  const { map, indexes } = resolved;
  for (const [i, idx] of indexes.entries()) {
    const f = chain.files[i]!;
    if (isRawImageFile(f.path)) log.info(`Data file [${f.name}] is a raw image (no metadata).`);
    else o.printMeta?.(JSON.stringify(idx.rawMetadata), f.path);
    if (i > 0 && idx.metadata.dataSize === 0) log.info(`Saveset [${f.name}] contains no data, skipping.`);
  }
  const last = chain.files[chain.files.length - 1]!;
  for (const c of sizeChanges(chain))
    log.info(`Disk [${o.dev}] was ${c.to > c.from ? 'grown' : 'shrunk'} from ${c.from} to ${c.to} bytes at [${c.file}]${c.to < c.from ? ': data beyond the new end is dropped' : ''}.`);
  let format: ImageFormat;
  try {
    format = validateFormat(o.format ?? last.metadata.diskFormat, o.format !== undefined ? 'the domain config' : last.path);
  } catch (e) {
    throw new RestoreError(errorMessage(e), 'create', o.dev, { cause: e });
  }
  let qcow: QcowOptions | undefined;
  if (format === 'qcow2') {
    if (o.qcowJson !== undefined) qcow = await readQcowJson(o.qcowJson, (m) => log.warn(m));
    else log.warn(`No QCOW image config found in [${o.input}], will use default options.`);
  }
  return { map, last, virtualSize: last.metadata.virtualSize, format, qcow };
}

/** Restores one disk; see the module comment. */
export async function restoreDisk(o: RestoreDiskOptions): Promise<RestoreDiskResult> {
  const t0 = performance.now();
  const log = o.log;
  if (!isPlainName(o.targetName)) throw new RestoreError(`Invalid target image name [${o.targetName}]`, 'create', o.dev);

  // 1. the chain (validated structurally while it is resolved)
  let chain: Chain | undefined;
  let chainError: unknown;
  try {
    checkAborted(o.signal, 'restore aborted');
    chain = selectChain(o);
  } catch (e) {
    chainError = e;
  }
  // --raw: a raw disk's image is copied as is; with --until its chain (a lone copy) may not
  // reach the checkpoint, but its only raw image is still the one to copy.
  const raw = chain !== undefined || o.until !== undefined ? rawSourceSafe(o, chain) : undefined;
  if (raw) return restoreRawCopy(o, raw, t0);
  if (!chain) throw new RestoreError(errorMessage(chainError), 'chain', o.dev, { cause: chainError });

  const { map, last, virtualSize, format, qcow } = await planImage(o, chain);
  const total = dataBytes(map);
  log.info(
    `Create virtual disk [${join(resolve(o.output), o.targetName)}] format: [${format}] size: [${virtualSize}] ` +
      `based on: [${pointIdent(last)}] preallocated: [${o.preallocate}]`,
  );
  let target: TargetImage;
  try {
    checkAborted(o.signal, 'restore aborted');
    target = await createTarget({ output: o.output, name: o.targetName, format, size: virtualSize, preallocate: o.preallocate, qcow, log });
  } catch (e) {
    throw new RestoreError(errorMessage(e), 'create', o.dev, { cause: e });
  }

  // 3. the data, 4. publication
  let compress = o.compress === true;
  if (compress && format !== 'qcow2') {
    log.info(`Compression applies to qcow2 images only: the ${format} image [${target.path}] is written uncompressed.`);
    compress = false;
  } else if (compress && target.dataFile !== undefined) {
    log.info(`Compression is not possible with an external data file: the image [${target.path}] is written uncompressed.`);
    compress = false;
  } else if (compress && virtualSize % (qcow?.clusterSize ?? 65536) !== 0) {
    log.info(`Compression needs a virtual size that is a multiple of the cluster size: the image [${target.path}] is written uncompressed.`);
    compress = false;
  } else if (compress && o.preallocate) {
    log.info(`Compression is not possible in a preallocated image: the image [${target.path}] is written uncompressed.`);
    compress = false;
  }
  let stage: RestoreStage = 'copy';
  try {
    await copyChain({
      map,
      target: { path: target.partial, format },
      method: o.method,
      progress: (done, total) => {
        faultPoint('restore:mid-copy'); // test/faults/: the partial image holds some data
        o.progress?.(done, total);
      },
      signal: o.signal,
      socket: o.socket,
      debug: (m) => log.debug(m),
      compress,
      clusterSize: qcow?.clusterSize,
    });
    checkAborted(o.signal, 'restore aborted');
    stage = 'publish';
    await finishTarget(target);
  } catch (e) {
    await abortTarget(target);
    const text = stage === 'copy' ? `Restoring data of disk [${o.dev}] into [${target.path}] failed: ${errorMessage(e)}` : errorMessage(e);
    throw new RestoreError(text, stage, o.dev, { cause: e });
  }
  return {
    path: target.path,
    virtualSize,
    dataBytes: total,
    allocatedBytes: await allocated([target.path, target.dataFile]),
    seconds: (performance.now() - t0) / 1000,
    files: chain.files.map((f) => f.path),
    rawCopy: false,
  };
}

/** rawSource without throwing: a set that cannot be listed is reported by the chain error. */
function rawSourceSafe(o: RestoreDiskOptions, chain: Chain | undefined): ChainFile | undefined {
  try {
    return rawSource(o, chain);
  } catch {
    return undefined;
  }
}

/** `--raw`: copy a raw image file byte for byte into `<output>/<name>` (holes kept unless preallocating). */
async function restoreRawCopy(o: RestoreDiskOptions, src: ChainFile, t0: number): Promise<RestoreDiskResult> {
  const path = join(resolve(o.output), o.targetName);
  const partial = `${path}.partial`;
  if (await pathExists(path)) throw new RestoreError(targetExistsMessage(path), 'create', o.dev);
  try {
    const fh = await open(partial, 'wx', 0o600);
    await fh.close();
  } catch (e) {
    throw new RestoreError(`Cannot create [${partial}]: ${errorMessage(e)}`, 'create', o.dev, { cause: e });
  }
  const target: TargetImage = { path, partial, format: 'raw', size: src.metadata.virtualSize };
  o.log.info(`Copy raw image [${src.path}] to [${path}] (${src.metadata.virtualSize} bytes).`);
  let stage: RestoreStage = 'copy';
  try {
    checkAborted(o.signal, 'restore aborted');
    const r = await execa('cp', ['--sparse=' + (o.preallocate ? 'never' : 'always'), '--', src.path, partial], {
      reject: false,
      stdin: 'ignore',
      all: true,
      cancelSignal: o.signal,
    });
    checkAborted(o.signal, 'restore aborted');
    if (r.exitCode !== 0) throw new Error(`cp failed (exit ${r.exitCode ?? r.signal}): ${String(r.all ?? '').trim()}`);
    const size = (await stat(partial)).size;
    if (size !== src.metadata.virtualSize) throw new Error(`copied ${size} bytes, the raw image has ${src.metadata.virtualSize}`);
    o.progress?.(size, size);
    stage = 'publish';
    await finishTarget(target);
  } catch (e) {
    await abortTarget(target);
    const text = stage === 'copy' ? `Copying raw image [${src.path}] to [${path}] failed: ${errorMessage(e)}` : errorMessage(e);
    throw new RestoreError(e instanceof TargetImageError ? e.message : text, stage, o.dev, { cause: e });
  }
  return {
    path,
    virtualSize: src.metadata.virtualSize,
    dataBytes: src.metadata.dataSize,
    allocatedBytes: await allocated([path]),
    seconds: (performance.now() - t0) / 1000,
    files: [src.path],
    rawCopy: true,
  };
}
