/** Shared helpers of the saveset tests. */
import { mkdtempSync, openSync, readSync, closeSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeLz4Frame } from '../../../src/saveset/lz4.js';
import type { DataFrame, Metadata, SavesetIndex } from '../../../src/saveset/types.js';

export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'virtnbd-saveset-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function meta(over: Partial<Metadata> = {}): Metadata {
  return {
    virtualSize: 4096,
    dataSize: 0,
    date: '2026-01-02T03:04:05.678901',
    diskName: 'sda',
    diskFormat: 'qcow2',
    checkpointName: 'virtnbdbackup.0',
    compressed: false,
    compressionMethod: 'lz4',
    parentCheckpoint: '',
    incremental: false,
    streamVersion: 2,
    ...over,
  };
}

export function readAt(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const n = readSync(fd, b, got, length - got, offset + got);
      if (n === 0) throw new Error('short read');
      got += n;
    }
    return b;
  } finally {
    closeSync(fd);
  }
}

/** The decoded payload of a data frame of an indexed file. */
export function payloadOf(index: SavesetIndex, f: DataFrame): Buffer {
  if (!f.chunks) return readAt(index.path, f.payloadOffset, f.length);
  const parts = f.chunks.map((c) => decodeLz4Frame(readAt(index.path, c.offset, c.csize), c.usize, index.path, c.offset));
  return Buffer.concat(parts);
}

/** The 40-byte header, built by hand (independent of formatHeader). */
export function hdr(kind: string, start: number, length: number): string {
  return `${kind} ${start.toString(16).padStart(16, '0')} ${length.toString(16).padStart(16, '0')}\r\n`;
}
