/**
 * Discover the data files of a backup directory: one directory listing, names parsed with the
 * patterns of FORMAT.md §6.2, metadata read from each file's meta frame (validated). Never mtimes.
 */
import { readdirSync } from 'node:fs';
import { join, basename, resolve } from 'node:path';
import { readSavesetMetadata } from '../saveset/reader.js';
import { isRawImageFile, rawImageIndex } from './data-file.js';
import type { Metadata } from '../saveset/types.js';
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

/** Build a ChainFile for one path, checking that the name parses and agrees with diskName. */
export function chainFileFor(file: string): ChainFile {
  const path = resolve(file);
  const name = basename(path);
  const parsed = parseDataFileName(name);
  if (!parsed) throw new Error(`${path}: not a data file name (expected <disk>.full.data, <disk>.inc.<id>.data, ...)`);
  if (isRawImageFile(path)) return { ...parsed, name, path, metadata: rawImageIndex(path).metadata };
  const { metadata } = readSavesetMetadata(path);
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
    const f = chainFileFor(join(resolve(dir), e.name));
    const list = disks.get(f.dev) ?? [];
    list.push(f);
    disks.set(f.dev, list);
  }
  return { dir, disks, partials };
}
