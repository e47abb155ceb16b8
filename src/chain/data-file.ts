/**
 * Index any data file of a set: a sparse stream, or a plain raw image (FORMAT.md §4: `-t raw`
 * output and raw-format disks, named `<dev>.full.data` / `<dev>.copy.data`). A raw image is
 * described as one data extent over the whole file, so it can be mapped and used as a chain base.
 */
import { statSync } from 'node:fs';
import { basename } from 'node:path';
import { indexSaveset, isSavesetFile } from '../saveset/reader.js';
import type { SavesetIndex } from '../saveset/types.js';
import { parseDataFileName } from './names.js';

/** True when `path` is a full/copy data file that is a raw image rather than a stream. */
export function isRawImageFile(path: string): boolean {
  const n = parseDataFileName(basename(path));
  return n !== undefined && (n.level === 'full' || n.level === 'copy') && !isSavesetFile(path);
}

/** A SavesetIndex describing a raw image: one data frame covering the whole file. */
export function rawImageIndex(path: string, size: number = statSync(path).size): SavesetIndex {
  const name = parseDataFileName(basename(path));
  const dev = name?.dev ?? '';
  // A raw full (`-t raw -l full`) started a chain: it created virtnbdbackup.0, as a stream full does.
  const checkpointName = name?.level === 'full' ? 'virtnbdbackup.0' : '';
  return {
    path,
    fileSize: size,
    compressed: false,
    rawMetadata: {},
    metadata: {
      virtualSize: size, dataSize: size, date: '', diskName: dev, diskFormat: 'raw', checkpointName,
      compressed: false, compressionMethod: 'lz4', parentCheckpoint: '', incremental: false, streamVersion: 2,
    },
    frames: size > 0 ? [{ kind: 'data', start: 0, length: size, headerOffset: 0, payloadOffset: 0, payloadSize: size }] : [],
  };
}

/** Index a stream, or describe a raw full/copy image. */
export function indexDataFile(path: string): SavesetIndex {
  return isRawImageFile(path) ? rawImageIndex(path) : indexSaveset(path);
}
