/**
 * Synchronous indexer of sparse stream files (FORMAT.md §2, §3, §9): reads headers, metadata,
 * the trailer and the first bytes of each LZ4 frame — never the payloads — and validates every
 * structural rule that can be checked without them. Usable in synchronous workers.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { parseHeader } from './header.js';
import { decodeLz4FrameUnsized, LZ4_MAX_HEADER_LEN, LZ4_MIN_FRAME_LEN, parseLz4FrameHeader } from './lz4.js';
import { parseMetadata } from './metadata.js';
import {
  HEADER_LEN,
  MAX_LZ4_CHUNK_LEN,
  MAX_METADATA_LEN,
  MAX_TRAILER_LEN,
  SavesetFormatError,
  type DataFrame,
  type ExtentFrame,
  type Lz4Chunk,
  type Metadata,
  type SavesetIndex,
} from './types.js';

/** Read-ahead of the small reads (headers, CRLFs, LZ4 frame headers). */
const WINDOW = 4096;

/** Positioned synchronous reads with a small read-ahead window. */
class SyncReader {
  private win: Buffer = Buffer.alloc(0);
  private winPos = 0;

  constructor(
    private readonly fd: number,
    readonly size: number,
    private readonly file: string,
  ) {}

  /** Exactly `len` bytes at `pos` (the caller has checked `pos + len ≤ size` and bounded `len`). */
  read(pos: number, len: number): Buffer {
    if (pos >= this.winPos && pos + len <= this.winPos + this.win.length) {
      return this.win.subarray(pos - this.winPos, pos - this.winPos + len);
    }
    const n = Math.max(len, Math.min(WINDOW, this.size - pos));
    const b = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const r = readSync(this.fd, b, got, n - got, pos + got);
      if (r === 0) break;
      got += r;
    }
    if (got < len) throw new SavesetFormatError(this.file, pos + got, 'unexpected end of file (did it shrink while being read?)');
    if (len <= WINDOW) {
      this.win = b.subarray(0, got);
      this.winPos = pos;
    }
    return b.subarray(0, len);
  }
}

/** One trailer element: the compressed sizes of a data frame's LZ4 frames. */
interface TrailerEntry {
  total: number;
  sizes: number[];
}

const isPositiveInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v > 0;

/** Parse and validate the trailer JSON (FORMAT.md §3.3, §9 checks 11 and 13). */
function parseTrailer(json: Buffer, file: string, offset: number, fileSize: number): TrailerEntry[] {
  const bad = (reason: string): SavesetFormatError => new SavesetFormatError(file, offset, `trailer missing/corrupt: ${reason}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(json));
  } catch (e) {
    throw bad(`not valid JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(parsed)) throw bad('not a JSON array');
  return parsed.map((el: unknown, i): TrailerEntry => {
    const badEl = (reason: string): SavesetFormatError => new SavesetFormatError(file, offset, `bad trailer element #${i}: ${reason}`);
    if (typeof el === 'number') {
      if (!isPositiveInt(el) || el > fileSize) throw badEl(`${el} is not a positive integer within the file size`);
      return { total: el, sizes: [el] };
    }
    if (typeof el !== 'object' || el === null || Array.isArray(el)) throw badEl('neither an integer nor an object');
    const keys = Object.keys(el);
    if (keys.length !== 1) throw badEl(`object has ${keys.length} members, expected exactly one`);
    const key = keys[0]!;
    const list = (el as Record<string, unknown>)[key];
    if (!Array.isArray(list) || list.length === 0) throw badEl('value is not a non-empty list');
    let sum = 0;
    for (const s of list) {
      if (!isPositiveInt(s) || s > fileSize) throw badEl(`size ${JSON.stringify(s)} is not a positive integer within the file size`);
      sum += s;
      if (sum > fileSize) throw badEl('sizes add up to more than the file size');
    }
    if (key !== String(sum)) throw badEl(`key ${JSON.stringify(key)} is not the sum of its sizes (${sum})`);
    return { total: sum, sizes: list as number[] };
  });
}

function indexFd(fd: number, file: string): SavesetIndex {
  const st = fstatSync(fd);
  if (!st.isFile()) throw new SavesetFormatError(file, 0, 'not a regular file');
  const S = st.size;
  const err = (at: number, reason: string): SavesetFormatError => new SavesetFormatError(file, at, reason);
  const r = new SyncReader(fd, S, file);
  const expectCrlf = (at: number, what: string): void => {
    const b = r.read(at, 2);
    if (b[0] !== 0x0d || b[1] !== 0x0a) throw err(at, `bad terminator: no CRLF after ${what}`);
  };

  // 1, 4, 5: meta frame
  if (S < HEADER_LEN) throw err(0, `not a sparse stream: file has only ${S} bytes`);
  const mh = parseHeader(r.read(0, HEADER_LEN), file, 0);
  if (mh.kind !== 'meta' || mh.start !== 0) throw err(0, 'not a sparse stream: the first frame is not "meta" with start 0');
  const n = mh.length;
  if (n > MAX_METADATA_LEN) throw err(22, `bad metadata: length ${n} exceeds 1 MiB`);
  if (n > S - HEADER_LEN - 2) throw err(22, `bad metadata: length ${n} runs past the end of the file`);
  const { metadata, raw, compressed } = parseMetadata(Buffer.from(r.read(HEADER_LEN, n)), file, HEADER_LEN);
  expectCrlf(HEADER_LEN + n, 'the metadata JSON');
  let pos = HEADER_LEN + n + 2;

  // 10, 11: where the stop header must be; compressed: the trailer
  let stopAt: number;
  let trailer: TrailerEntry[] | undefined;
  if (compressed) {
    if (S - HEADER_LEN - 2 - HEADER_LEN < pos) throw err(S, 'trailer missing/corrupt: file too short for stop, trailer and comp frames');
    const compAt = S - HEADER_LEN;
    let ch;
    try {
      ch = parseHeader(r.read(compAt, HEADER_LEN), file, compAt);
    } catch (e) {
      if (e instanceof SavesetFormatError) throw err(e.offset, `trailer missing/corrupt: no valid comp header at the end of the file (${e.reason})`);
      throw e;
    }
    if (ch.kind !== 'comp' || ch.start !== 0) throw err(compAt, 'trailer missing/corrupt: the last 40 bytes are not a "comp" header with start 0');
    const t = ch.length;
    if (t > MAX_TRAILER_LEN) throw err(compAt + 22, `trailer missing/corrupt: trailer length ${t} exceeds 64 MiB`);
    if (t > compAt - 2 - HEADER_LEN - pos) throw err(compAt + 22, `trailer missing/corrupt: trailer length ${t} runs past the frames`);
    expectCrlf(compAt - 2, 'the trailer JSON');
    const trailerAt = compAt - 2 - t;
    trailer = parseTrailer(Buffer.from(r.read(trailerAt, t)), file, trailerAt, S);
    stopAt = trailerAt - HEADER_LEN;
  } else {
    stopAt = S - HEADER_LEN;
  }

  // 2, 3, 6–10, 12, 14: frame walk
  const frames: ExtentFrame[] = [];
  let lastEnd = 0;
  let dataSum = 0;
  let dataCount = 0;
  for (;;) {
    if (pos === stopAt) {
      const h = parseHeader(r.read(pos, HEADER_LEN), file, pos);
      if (h.kind !== 'stop') {
        throw err(pos, compressed
          ? `trailer/frames disagree: expected the stop header here, found "${h.kind}"`
          : `truncated file: expected the stop header at the end of the file, found "${h.kind}"`);
      }
      if (h.start !== 0 || h.length !== 0) throw err(pos, 'stop frame must have start 0 and length 0');
      break;
    }
    if (pos + HEADER_LEN > stopAt) {
      throw err(pos, compressed
        ? `trailer/frames disagree: frames run past the stop header position ${stopAt}`
        : 'truncated file: no stop frame');
    }
    const headerOffset = pos;
    const h = parseHeader(r.read(pos, HEADER_LEN), file, pos);
    pos += HEADER_LEN;
    if (h.kind === 'stop') {
      throw err(headerOffset, compressed
        ? `trailer/frames disagree: stop frame at ${headerOffset}, the trailer places it at ${stopAt}`
        : `trailing garbage: ${S - pos} bytes after the stop frame`);
    }
    if (h.kind !== 'data' && h.kind !== 'zero') throw err(headerOffset, `unexpected "${h.kind}" frame`);
    const { start, length } = h;
    if (length === 0) throw err(headerOffset, `frame out of range: ${h.kind} frame with length 0`);
    if (start > metadata.virtualSize || length > metadata.virtualSize - start) {
      throw err(headerOffset, `frame out of range: ${start}+${length} exceeds the virtual size ${metadata.virtualSize}`);
    }
    if (start < lastEnd) throw err(headerOffset, `unsorted/overlapping frames: start ${start} is before the end ${lastEnd} of the previous frame`);
    lastEnd = start + length;
    if (h.kind === 'zero') {
      frames.push({ kind: 'zero', start, length, headerOffset });
      continue;
    }

    const payloadOffset = pos;
    const frame: DataFrame = { kind: 'data', start, length, headerOffset, payloadOffset, payloadSize: length };
    if (trailer) {
      const entry = trailer[dataCount];
      if (!entry) throw err(headerOffset, `trailer count mismatch: more data frames than the ${trailer.length} trailer elements`);
      frame.payloadSize = entry.total;
    }
    if (frame.payloadSize > stopAt - payloadOffset - 2) {
      throw err(headerOffset, compressed
        ? `trailer/frames disagree: payload of ${frame.payloadSize} bytes runs past the stop header`
        : `truncated file: payload of ${length} bytes runs past the end of the file`);
    }
    if (trailer) frame.chunks = indexChunks(r, file, frame, trailer[dataCount]!.sizes);
    pos = payloadOffset + frame.payloadSize;
    expectCrlf(pos, `the payload of the data frame at ${headerOffset}`);
    pos += 2;
    frames.push(frame);
    dataSum += length;
    dataCount++;
  }

  if (trailer && dataCount !== trailer.length) {
    throw err(stopAt + HEADER_LEN, `trailer count mismatch: ${trailer.length} trailer elements for ${dataCount} data frames`);
  }
  // 16
  if (dataSum !== metadata.dataSize) {
    throw err(HEADER_LEN, `size mismatch: data frames hold ${dataSum} bytes, metadata dataSize is ${metadata.dataSize}`);
  }
  return { path: file, fileSize: S, metadata, rawMetadata: raw, compressed, frames };
}

/** The LZ4 chunks of a compressed data frame, from the trailer sizes and each frame's header. */
function indexChunks(r: SyncReader, file: string, frame: DataFrame, sizes: number[]): Lz4Chunk[] {
  const chunks: Lz4Chunk[] = [];
  let off = frame.payloadOffset;
  let total = 0;
  for (const csize of sizes) {
    if (csize < LZ4_MIN_FRAME_LEN) throw new SavesetFormatError(file, off, `corrupt LZ4 frame: ${csize} bytes is too short for an LZ4 frame`);
    const hdr = parseLz4FrameHeader(r.read(off, Math.min(csize, LZ4_MAX_HEADER_LEN)), file, off);
    let usize: number;
    if (hdr.contentSize !== undefined) usize = hdr.contentSize;
    else if (sizes.length === 1) usize = frame.length;
    else {
      // rare: no content-size field in a multi-chunk frame; decode to learn the size
      if (csize > MAX_LZ4_CHUNK_LEN) throw new SavesetFormatError(file, off, `LZ4 frame of ${csize} bytes without content size is too large`);
      usize = decodeLz4FrameUnsized(Buffer.from(r.read(off, csize)), MAX_LZ4_CHUNK_LEN, file, off).length;
    }
    if (usize > MAX_LZ4_CHUNK_LEN) throw new SavesetFormatError(file, off, `LZ4 frame decodes to ${usize} bytes, more than the 256 MiB limit`);
    chunks.push({ offset: off, csize, usize });
    total += usize;
    off += csize;
  }
  if (total !== frame.length) {
    throw new SavesetFormatError(file, frame.headerOffset, `corrupt compressed data: LZ4 frames decode to ${total} bytes, the data frame has ${frame.length}`);
  }
  return chunks;
}

/**
 * Index and validate one stream file (FORMAT.md §9 checks 1–14 and 16; gaps are allowed).
 * Throws SavesetFormatError naming the file and the offset of the offending bytes.
 */
export function indexSaveset(path: string): SavesetIndex {
  const fd = openSync(path, 'r');
  try {
    return indexFd(fd, path);
  } finally {
    closeSync(fd);
  }
}

/** indexSaveset on a descriptor opened by someone else (the plugin shim hands its workers the files it checked); `path` names it in errors. */
export function indexSavesetFd(fd: number, path: string): SavesetIndex {
  return indexFd(fd, path);
}

/** The metadata of a stream file after validating its meta frame only, or a SavesetFormatError. */
export function readSavesetMetadata(path: string): { metadata: Metadata; raw: Record<string, unknown>; compressed: boolean } {
  const fd = openSync(path, 'r');
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new SavesetFormatError(path, 0, 'not a regular file');
    const S = st.size;
    const r = new SyncReader(fd, S, path);
    if (S < HEADER_LEN) throw new SavesetFormatError(path, 0, `not a sparse stream: file has only ${S} bytes`);
    const h = parseHeader(r.read(0, HEADER_LEN), path, 0);
    if (h.kind !== 'meta' || h.start !== 0) throw new SavesetFormatError(path, 0, 'not a sparse stream: the first frame is not "meta" with start 0');
    if (h.length > MAX_METADATA_LEN || h.length > S - HEADER_LEN) {
      throw new SavesetFormatError(path, 22, `bad metadata: length ${h.length} exceeds 1 MiB or the file`);
    }
    return parseMetadata(Buffer.from(r.read(HEADER_LEN, h.length)), path, HEADER_LEN);
  } finally {
    closeSync(fd);
  }
}

/**
 * Whether `path` starts like a sparse stream (FORMAT.md §4): a complete meta header with start 0
 * and a parseable metadata JSON with `virtualSize`. I/O errors (e.g. a missing file) are thrown.
 */
export function isSavesetFile(path: string): boolean {
  try {
    readSavesetMetadata(path);
    return true;
  } catch (e) {
    if (e instanceof SavesetFormatError) return false;
    throw e;
  }
}
