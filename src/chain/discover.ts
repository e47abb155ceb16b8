/**
 * Discover the data files of a backup directory: one directory listing, names parsed with the
 * patterns of FORMAT.md §6.2, metadata read from each file's meta frame (validated). Never mtimes.
 */
import { readdirSync, openSync, readSync, closeSync, fstatSync } from 'node:fs';
import { join, basename } from 'node:path';
import { parseHeader } from '../saveset/header.js';
import { parseMetadata } from '../saveset/metadata.js';
import { HEADER_LEN, SavesetFormatError, type Metadata } from '../saveset/types.js';
import { parseDataFileName, isPartialName, type DataFileName } from './names.js';

/** A data file of a set with its parsed name and metadata. */
export interface ChainFile extends DataFileName {
  name: string;
  path: string;
  metadata: Metadata;
}

export interface BackupDir {
  dir: string;
  /** Data files grouped by disk, in no particular order. */
  disks: Map<string, ChainFile[]>;
  /** `*.data.partial` files: traces of an incomplete run. */
  partials: string[];
}

const META_MAX = 1024 * 1024;

/** Read and validate only the metadata of a stream file (first frame). */
export function readSavesetMetadata(path: string): Metadata {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    if (size < HEADER_LEN) throw new SavesetFormatError(path, 0, `file of ${size} bytes is too short to be a stream`);
    const head = Buffer.alloc(HEADER_LEN);
    readFully(fd, head, 0, path);
    const h = parseHeader(head, path, 0);
    if (h.kind !== 'meta' || h.start !== 0) throw new SavesetFormatError(path, 0, 'first frame is not a meta frame');
    if (h.length > META_MAX || h.length > size - HEADER_LEN)
      throw new SavesetFormatError(path, 0, `metadata length ${h.length} exceeds the limit or the file`);
    const json = Buffer.alloc(h.length);
    readFully(fd, json, HEADER_LEN, path);
    return parseMetadata(json, path, HEADER_LEN).metadata;
  } finally {
    closeSync(fd);
  }
}

function readFully(fd: number, buf: Buffer, position: number, path: string): void {
  let done = 0;
  while (done < buf.length) {
    const n = readSync(fd, buf, done, buf.length - done, position + done);
    if (n === 0) throw new SavesetFormatError(path, position + done, 'unexpected end of file');
    done += n;
  }
}

/** Build a ChainFile for one path, checking that the name parses and agrees with diskName. */
export function chainFileFor(path: string): ChainFile {
  const name = basename(path);
  const parsed = parseDataFileName(name);
  if (!parsed) throw new Error(`${path}: not a data file name (expected <disk>.full.data, <disk>.inc.<id>.data, ...)`);
  const metadata = readSavesetMetadata(path);
  if (metadata.diskName !== parsed.dev)
    throw new Error(`${path}: metadata names disk [${metadata.diskName}] but the file name says [${parsed.dev}]; refusing the file`);
  return { ...parsed, name, path, metadata };
}

/** List a backup directory once and read the metadata of every data file. */
export function discoverBackupDir(dir: string): BackupDir {
  const entries = readdirSync(dir, { withFileTypes: true });
  const disks = new Map<string, ChainFile[]>();
  const partials: string[] = [];
  for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    if (!e.isFile()) continue;
    if (isPartialName(e.name)) {
      partials.push(e.name);
      continue;
    }
    if (!parseDataFileName(e.name)) continue;
    const f = chainFileFor(join(dir, e.name));
    const list = disks.get(f.dev) ?? [];
    list.push(f);
    disks.set(f.dev, list);
  }
  return { dir, disks, partials };
}
