/**
 * Index the data files of a chain through descriptors the plugin shim opened and checked
 * (docs/PROTOCOL.md: the worker reads the very files the shim checked, never re-opening a path
 * that may since name another file). `path` only names the file (errors, the chain's file names).
 */
import { fstatSync } from 'node:fs';
import { basename } from 'node:path';
import { parseDataFileName } from '../chain/names.js';
import { rawImageIndex } from '../chain/data-file.js';
import { indexSavesetFd, isSavesetFile } from '../saveset/reader.js';
import type { SavesetIndex } from '../saveset/types.js';

/** indexDataFile (src/chain/data-file.ts) on an open descriptor. */
export function indexDataFd(fd: number, path: string): SavesetIndex {
  const name = parseDataFileName(basename(path));
  // A full/copy that is not a stream is a raw image; /proc/self/fd/N opens the same inode as fd.
  if (name !== undefined && (name.level === 'full' || name.level === 'copy') && !isSavesetFile(`/proc/self/fd/${fd}`)) {
    return rawImageIndex(path, fstatSync(fd).size);
  }
  return indexSavesetFd(fd, path);
}
