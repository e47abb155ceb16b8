/**
 * Write saveset files from raw disk images with our writer — for the demo, tests and benchmarks
 * (a stand-in for a real backup run where no VM is involved). A full/copy describes the whole
 * image (data frames for non-zero blocks, zero frames for zero blocks); an inc/diff describes the
 * blocks that differ from the previous image (zero frames where a changed block now reads as
 * zeros, exactly what our backup writes for trimmed/zeroed ranges).
 *
 * Two passes over the image(s): the first finds the extents (the metadata's dataSize comes first
 * in the file), the second streams the data. Memory: the extent list plus one window.
 */
import { openSync, readSync, closeSync, fstatSync } from 'node:fs';
import { SavesetWriter } from '../saveset/writer.js';
import { formatDate } from '../saveset/metadata.js';
import type { Metadata } from '../saveset/types.js';

export interface ImageFileOptions {
  /** The raw image to describe. */
  image: string;
  /** For inc/diff: the raw image of the previous point. */
  previous?: string;
  /** Final path of the data file (e.g. `<dir>/vda.full.data`). */
  out: string;
  dev: string;
  level: 'full' | 'copy' | 'inc' | 'diff';
  checkpointName: string;
  parentCheckpoint: string;
  compress: false | number;
  /** Granularity of change detection; default 64 KiB. */
  blockSize?: number;
  date?: Date;
}

export interface Extent {
  start: number;
  length: number;
  data: boolean;
}

const WINDOW = 4 * 1024 * 1024;

function readAt(fd: number, size: number, buf: Buffer, pos: number): Buffer {
  const want = Math.max(0, Math.min(buf.length, size - pos));
  let done = 0;
  while (done < want) {
    const n = readSync(fd, buf, done, want - done, pos + done);
    if (n === 0) break;
    done += n;
  }
  buf.fill(0, done);
  return buf;
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i += 8) if (b.readBigUInt64LE(i) !== 0n) return false;
  return true;
}

/** The extents a file of `opts.level` records (merged runs of equal class). */
export function imageExtents(opts: ImageFileOptions): { size: number; extents: Extent[] } {
  const bs = opts.blockSize ?? 65536;
  const fd = openSync(opts.image, 'r');
  const pfd = opts.previous ? openSync(opts.previous, 'r') : -1;
  try {
    const size = fstatSync(fd).size;
    const psize = pfd >= 0 ? fstatSync(pfd).size : 0;
    const delta = opts.level === 'inc' || opts.level === 'diff';
    if (delta && pfd < 0) throw new Error('inc/diff needs the previous image');
    const extents: Extent[] = [];
    const add = (start: number, length: number, data: boolean): void => {
      const last = extents[extents.length - 1];
      if (last && last.data === data && last.start + last.length === start) last.length += length;
      else extents.push({ start, length, data });
    };
    const win = Buffer.alloc(WINDOW);
    const pwin = Buffer.alloc(WINDOW);
    for (let pos = 0; pos < size; pos += WINDOW) {
      readAt(fd, size, win, pos);
      if (delta) readAt(pfd, psize, pwin, pos);
      for (let o = 0; o < WINDOW && pos + o < size; o += bs) {
        const len = Math.min(bs, size - pos - o);
        const blk = win.subarray(o, o + Math.ceil(len / 8) * 8);
        if (delta && pos + o + len <= psize && blk.equals(pwin.subarray(o, o + blk.length))) continue;
        add(pos + o, len, !isZero(blk));
      }
    }
    return { size, extents };
  } finally {
    closeSync(fd);
    if (pfd >= 0) closeSync(pfd);
  }
}

/** Write one data file describing `opts.image`; returns its extents. */
export async function writeImageFile(opts: ImageFileOptions): Promise<{ size: number; extents: Extent[] }> {
  const { size, extents } = imageExtents(opts);
  const dataSize = extents.reduce((n, e) => n + (e.data ? e.length : 0), 0);
  const meta: Metadata = {
    virtualSize: size,
    dataSize,
    date: formatDate(opts.date ?? new Date()),
    diskName: opts.dev,
    diskFormat: 'qcow2',
    checkpointName: opts.checkpointName,
    compressed: opts.compress,
    compressionMethod: 'lz4',
    parentCheckpoint: opts.parentCheckpoint,
    incremental: opts.level === 'inc' || opts.level === 'diff',
    streamVersion: 2,
  };
  const w = await SavesetWriter.create(opts.out, meta, { compress: opts.compress });
  const fd = openSync(opts.image, 'r');
  try {
    for (const e of extents) {
      if (!e.data) {
        await w.zero(e.start, e.length);
        continue;
      }
      await w.beginData(e.start, e.length);
      for (let at = e.start; at < e.start + e.length; at += WINDOW) {
        const n = Math.min(WINDOW, e.start + e.length - at);
        const piece = Buffer.alloc(n);
        readAt(fd, size, piece, at);
        await w.write(piece);
      }
      await w.endData();
    }
    await w.finish();
  } catch (err) {
    await w.abort();
    throw err;
  } finally {
    closeSync(fd);
  }
  return { size, extents };
}

export interface ChainPoint {
  /** Raw image of the disk at this point. */
  image: string;
  level: 'full' | 'copy' | 'inc' | 'diff';
}

/**
 * Write a whole chain for disk `dev` into `dir` with the original's names: `<dev>.full.data`,
 * `<dev>.inc.virtnbdbackup.N.data`, `<dev>.diff.<unixtime>.data` (diffs relative to the last
 * full/inc, as the original's). Returns the written file names in order.
 */
export async function writeImageChain(dir: string, dev: string, points: ChainPoint[], compress: false | number): Promise<string[]> {
  const names: string[] = [];
  let cpt = 0; // checkpoints created so far
  let parentImage: string | undefined;
  let diffTime = 1_800_000_000;
  for (const p of points) {
    let name: string;
    let checkpointName: string;
    let parent = '';
    if (p.level === 'full' || p.level === 'copy') {
      name = `${dev}.${p.level}.data`;
      checkpointName = 'virtnbdbackup.0';
      cpt = p.level === 'full' ? 1 : 0;
    } else if (p.level === 'inc') {
      checkpointName = `virtnbdbackup.${cpt}`;
      parent = `virtnbdbackup.${cpt - 1}`;
      name = `${dev}.inc.${checkpointName}.data`;
      cpt++;
    } else {
      checkpointName = `virtnbdbackup.${cpt}`;
      parent = `virtnbdbackup.${cpt - 1}`;
      name = `${dev}.diff.${diffTime++}.data`;
    }
    await writeImageFile({
      image: p.image,
      previous: p.level === 'inc' || p.level === 'diff' ? parentImage : undefined,
      out: `${dir}/${name}`,
      dev,
      level: p.level,
      checkpointName,
      parentCheckpoint: parent,
      compress,
    });
    if (p.level !== 'diff') parentImage = p.image;
    names.push(name);
  }
  return names;
}
