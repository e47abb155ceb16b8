/**
 * A synthetic full: the resolved extent map of a chain (src/chain) written out as one complete
 * stream — data frames for every data extent (adjacent ones merged into one frame), zero frames
 * for the rest, so the frames tile the disk as a full's must (FORMAT.md §2.4). The metadata is
 * that of a full of the cut point: `checkpointName` = the point's checkpoint, no parent,
 * `incremental: false`, the cut file's date, format and compression (a compressed set stays
 * compressed: source LZ4 frames that survive whole are copied verbatim after a checking decode,
 * everything else is compressed by the SavesetWriter at the set's level).
 *
 * Cost: only the extents of the map are read (each byte once; an LZ4 frame is decoded once however
 * many of its slices survive), reads and decodes run ahead of the writer with a bounded budget.
 * The stream goes through the writer's sink mode into `<path>`, which must not exist; the caller
 * fsyncs and publishes it (src/prune/execute.ts).
 */
import { open, type FileHandle } from 'node:fs/promises';
import { ExtentKind, dataBytes, type ExtentMap, type MapExtent } from '../chain/extent-map.js';
import { decodeLz4FrameAsync } from '../saveset/lz4.js';
import { SavesetWriter, type SavesetSink } from '../saveset/writer.js';
import { LZ4_CHUNK, type Metadata } from '../saveset/types.js';
import { readFully } from '../saveset/read-fully.js';

/** Largest piece of a raw extent read at once. */
const PIECE = 4 << 20;
/** Bytes read or decoded ahead of the writer. */
const AHEAD = 96 << 20;

export interface SyntheticFullResult {
  bytes: number;
  checksum: number;
  dataBytes: number;
}

/** A file sink that writes sequentially and fsyncs at the end. */
async function fileSink(path: string): Promise<SavesetSink & { close(): Promise<void> }> {
  const fh = await open(path, 'wx');
  let pos = 0;
  let closed = false;
  return {
    async write(buf: Buffer): Promise<void> {
      let off = 0;
      while (off < buf.length) {
        const { bytesWritten } = await fh.write(buf, off, buf.length - off, pos);
        off += bytesWritten;
        pos += bytesWritten;
      }
    },
    async end(): Promise<void> {
      await fh.sync();
      closed = true;
      await fh.close();
    },
    async close(): Promise<void> {
      if (!closed) {
        closed = true;
        await fh.close().catch(() => undefined);
      }
    },
  };
}

/** What the writer does next, in stream order; `load` (payload) runs ahead of the writer. */
type Op =
  | { kind: 'zero'; start: number; length: number }
  | { kind: 'begin'; start: number; length: number }
  | { kind: 'end' }
  /** Payload bytes for write(). */
  | { kind: 'bytes'; length: number; load(): Promise<Buffer> }
  /** A whole LZ4 frame of the source, copied verbatim (decoded once to check it). */
  | { kind: 'frame'; length: number; csize: number; load(): Promise<Buffer> };

/**
 * The ops of a map. Consecutive data extents become one data frame; in a compressed stream a
 * source LZ4 frame that survives whole becomes a data frame of its own, copied verbatim (its
 * decoded size is then exactly that frame's chunk, FORMAT.md §3.1), so it is not compressed again.
 */
function* opsOf(
  map: ExtentMap,
  compressed: boolean,
  fileOf: (i: number) => Promise<FileHandle>,
  frameOf: (e: MapExtent) => Promise<Buffer>,
  wholeFrameOf: (e: MapExtent) => Promise<Buffer>,
): Generator<Op> {
  const whole = (e: MapExtent): boolean => compressed && e.kind === ExtentKind.Lz4 && e.sliceOffset === 0 && e.length === e.usize && e.usize <= LZ4_CHUNK;
  const ex = map.extents;
  for (let i = 0; i < ex.length; ) {
    const e = ex[i]!;
    if (e.kind === ExtentKind.Zero) {
      yield { kind: 'zero', start: e.start, length: e.length };
      i++;
      continue;
    }
    if (whole(e)) {
      yield { kind: 'begin', start: e.start, length: e.length };
      yield { kind: 'frame', length: e.length, csize: e.csize, load: () => wholeFrameOf(e) };
      yield { kind: 'end' };
      i++;
      continue;
    }
    let j = i;
    let length = 0;
    while (j < ex.length && ex[j]!.kind !== ExtentKind.Zero && (j === i || !whole(ex[j]!))) length += ex[j++]!.length;
    yield { kind: 'begin', start: e.start, length };
    for (let k = i; k < j; k++) {
      const x = ex[k]!;
      if (x.kind === ExtentKind.Raw) {
        for (let at = 0; at < x.length; at += PIECE) {
          const len = Math.min(PIECE, x.length - at);
          yield {
            kind: 'bytes',
            length: len,
            load: async () => {
              const buf = Buffer.allocUnsafe(len);
              await readFully(await fileOf(x.file), map.files[x.file]!, buf, x.fileOffset + at);
              return buf;
            },
          };
        }
      } else {
        yield { kind: 'bytes', length: x.length, load: async () => (await frameOf(x)).subarray(x.sliceOffset, x.sliceOffset + x.length) };
      }
    }
    yield { kind: 'end' };
    i = j;
  }
}

/** Write `map` as a full stream with metadata `meta` (dataSize is filled in) into the new file `path`. */
export async function writeSyntheticFull(map: ExtentMap, meta: Omit<Metadata, 'dataSize' | 'virtualSize'>, path: string): Promise<SyntheticFullResult> {
  const total = dataBytes(map);
  const full: Metadata = { ...meta, virtualSize: map.size, dataSize: total, incremental: false, parentCheckpoint: '' };
  const handles = new Map<number, Promise<FileHandle>>();
  const fileOf = (i: number): Promise<FileHandle> => {
    let h = handles.get(i);
    if (!h) {
      h = open(map.files[i]!, 'r');
      handles.set(i, h);
    }
    return h;
  };
  // The LZ4 frame decoded last (consecutive slices of one frame share it).
  let lastKey = '';
  let lastFrame: Promise<Buffer> | undefined;
  const frameOf = (e: MapExtent): Promise<Buffer> => {
    const key = `${e.file}:${e.fileOffset}`;
    if (key !== lastKey || !lastFrame) {
      lastKey = key;
      lastFrame = (async () => {
        const frame = Buffer.allocUnsafe(e.csize);
        await readFully(await fileOf(e.file), map.files[e.file]!, frame, e.fileOffset);
        return decodeLz4FrameAsync(frame, e.usize, map.files[e.file]!, e.fileOffset);
      })();
      lastFrame.catch(() => undefined);
    }
    return lastFrame;
  };

  const sink = await fileSink(path);
  let writer: SavesetWriter | undefined;
  try {
    writer = await SavesetWriter.createToSink(sink, full, { compress: full.compressed, name: path });
    const wholeFrameOf = async (e: MapExtent): Promise<Buffer> => {
      const frame = Buffer.allocUnsafe(e.csize);
      await readFully(await fileOf(e.file), map.files[e.file]!, frame, e.fileOffset);
      await decodeLz4FrameAsync(frame, e.usize, map.files[e.file]!, e.fileOffset); // checks every checksum
      return frame;
    };
    // Payload loads run ahead of the writer, bounded by AHEAD bytes.
    const it = opsOf(map, full.compressed !== false, fileOf, frameOf, wholeFrameOf);
    const queue: { op: Op; data?: Promise<Buffer> }[] = [];
    let queued = 0;
    let done = false;
    const fill = (): void => {
      while (!done && (queue.length === 0 || queued < AHEAD)) {
        const n = it.next();
        if (n.done) {
          done = true;
          break;
        }
        const op = n.value;
        if (op.kind === 'bytes' || op.kind === 'frame') {
          const data = op.load();
          data.catch(() => undefined);
          queue.push({ op, data });
          queued += op.length;
        } else queue.push({ op });
      }
    };
    fill();
    while (queue.length > 0) {
      const { op, data } = queue.shift()!;
      if (op.kind === 'zero') await writer.zero(op.start, op.length);
      else if (op.kind === 'begin') await writer.beginData(op.start, op.length);
      else if (op.kind === 'end') await writer.endData();
      else {
        const buf = await data!;
        queued -= op.length;
        fill();
        if (op.kind === 'frame') await writer.writeLz4Frame(buf, op.length);
        else await writer.write(buf);
      }
      fill();
    }
    const r = await writer.finish();
    return { bytes: r.bytes, checksum: r.checksum, dataBytes: total };
  } finally {
    await sink.close();
    for (const h of handles.values()) await h.then((fh) => fh.close()).catch(() => undefined);
  }
}
