/**
 * Which data files `dump` and `verify` look at (BEHAVIOUR.md §11.1, §11.10, §11.11, CLI.md §3):
 * the directory is listed once and names are parsed with the patterns of FORMAT.md §6.2 (never
 * mtimes); `--disk` is an exact match on the parsed `<dev>` (ours, D32: `vda` does not select
 * `vdaa.*`); `--sequence` lists names relative to `--input`, taken in the given order. Also tells
 * a sparse stream from a raw image (FORMAT.md §4) without trusting more than the first header.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { parseDataFileName, isPartialName, type DataFileName } from '../chain/names.js';
import type { Logger } from '../log/logger.js';
import { parseHeader } from '../saveset/header.js';
import { HEADER_LEN, SavesetFormatError } from '../saveset/types.js';

/** A problem with `--input`, `--disk` or `--sequence` that ends the action (exit 1). */
export class RestoreInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RestoreInputError';
  }
}

/** One data file selected for dump or verify. */
export interface SelectedFile {
  /** The path to open (absolute). */
  path: string;
  /** Its base name. */
  name: string;
  /** The parsed name; undefined for a `--sequence` entry whose name is not a data file name. */
  parsed?: DataFileName;
}

export interface SelectOptions {
  disk?: string;
  sequence?: readonly string[];
}

const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function isFileLike(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * The data files to process: the `--sequence` entries in the given order, or every data file
 * of `input` in name order; filtered by `--disk` (exact). Throws RestoreInputError with the
 * messages of BEHAVIOUR.md §11.1 when `input` is missing or holds no (matching) data file.
 */
export function selectDataFiles(input: string, opts: SelectOptions, log: Logger): SelectedFile[] {
  let isDir = false;
  try {
    isDir = statSync(input).isDirectory();
  } catch {
    isDir = false;
  }
  if (!isDir) throw new RestoreInputError(`Backup source [${input}] does not exist.`);
  const dir = resolve(input);
  const { disk } = opts;

  if (opts.sequence !== undefined) {
    const out: SelectedFile[] = [];
    for (const entry of opts.sequence) {
      if (entry === '') continue;
      const path = resolve(dir, entry); // like the original's os.path.join(input, entry)
      const name = basename(path);
      const parsed = parseDataFileName(name);
      if (disk !== undefined && parsed?.dev !== disk) {
        log.info(`Skipping [${entry}]: it does not belong to disk [${disk}].`);
        continue;
      }
      out.push(parsed ? { path, name, parsed } : { path, name });
    }
    if (out.length === 0) {
      throw new RestoreInputError(
        disk !== undefined ? `No data file of disk [${disk}] in the given sequence.` : 'The given sequence names no data file.',
      );
    }
    return out;
  }

  const out: SelectedFile[] = [];
  const devs = new Set<string>();
  for (const name of readdirSync(dir).sort(byName)) {
    const path = join(dir, name);
    if (isPartialName(name)) {
      if (isFileLike(path)) log.info(`Ignoring [${name}]: incomplete data file of an interrupted run.`);
      continue;
    }
    const parsed = parseDataFileName(name);
    if (!parsed || !isFileLike(path)) {
      if (parsed) log.debug(`Ignoring [${name}]: not a regular file.`);
      continue;
    }
    devs.add(parsed.dev);
    if (disk !== undefined && parsed.dev !== disk) continue;
    out.push({ path, name, parsed });
  }
  if (devs.size === 0) throw new RestoreInputError(`No data files found in directory: [${input}]`);
  if (out.length === 0) {
    throw new RestoreInputError(
      `No data files for disk [${disk}] found in directory: [${input}]; disks in this set: ${[...devs].sort(byName).join(', ')}`,
    );
  }
  return out;
}

/** What a data file holds, judged from its first header (FORMAT.md §4, §9 check 1). */
export type DataFileKind =
  /** Starts with a valid `meta` header: a sparse stream (its metadata may still be broken). */
  | { kind: 'stream' }
  /** A full/copy file without a stream header and without a `.chksum`: a raw image. */
  | { kind: 'raw' }
  /** Neither: a damaged stream, or not a data file at all. */
  | { kind: 'invalid'; error: SavesetFormatError };

/**
 * Probe a data file. A raw image is recognised by its name level (full or copy; inc/diff files
 * are always streams) and the absence of a stream header; a file that also has a `.chksum` is a
 * damaged stream, since raw images never get one (FORMAT.md §5). I/O errors are thrown.
 */
export async function probeDataFile(file: SelectedFile): Promise<DataFileKind> {
  const fh = await open(file.path, 'r');
  let head: Buffer;
  let size: number;
  try {
    size = (await fh.stat()).size;
    head = Buffer.alloc(Math.min(HEADER_LEN, size));
    let got = 0;
    while (got < head.length) {
      const { bytesRead } = await fh.read(head, got, head.length - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    head = head.subarray(0, got);
  } finally {
    await fh.close();
  }
  let error: SavesetFormatError;
  if (head.length < HEADER_LEN) {
    error = new SavesetFormatError(file.path, 0, `not a sparse stream: file has only ${size} bytes`);
  } else {
    try {
      const h = parseHeader(head, file.path, 0);
      if (h.kind === 'meta' && h.start === 0) return { kind: 'stream' };
      error = new SavesetFormatError(file.path, 0, 'not a sparse stream: the first frame is not "meta" with start 0');
    } catch (e) {
      if (!(e instanceof SavesetFormatError)) throw e;
      error = new SavesetFormatError(file.path, e.offset, `not a sparse stream: ${e.reason}`);
    }
  }
  const level = file.parsed?.level;
  if ((level === 'full' || level === 'copy') && size >= HEADER_LEN && !existsSync(`${file.path}.chksum`)) return { kind: 'raw' };
  return { kind: 'invalid', error };
}
