/**
 * LZ4 frames of compressed data payloads (FORMAT.md §3.2, §9 check 15).
 *
 * Compression and decompression are done by liblz4 through the native addon (native/lz4.cc says
 * why not lz4-napi, which only the tests still use, as an independent encoder); this module adds
 * what the format requires around it: on read a strict header check, a walk over the block
 * structure (exact frame end, no trailing bytes, a bound on the decoded size before anything is
 * decoded) and the decoded-size checks.
 */
import { loadNative } from '../nbd/native.js';
import { xxh32 } from '@node-rs/xxhash';
import { SavesetFormatError } from './types.js';

/** Magic number of an LZ4 frame, as it appears in the file. */
const MAGIC = 0x184d2204;
/** Largest LZ4 frame header: magic 4, FLG 1, BD 1, content size 8, dict ID 4, HC 1. */
export const LZ4_MAX_HEADER_LEN = 19;
/** Smallest complete LZ4 frame: magic, FLG, BD, HC, end mark. */
export const LZ4_MIN_FRAME_LEN = 11;

const FLG_VERSION_MASK = 0xc0;
const FLG_VERSION_01 = 0x40;
const FLG_BLOCK_CHECKSUM = 0x10;
const FLG_CONTENT_SIZE = 0x08;
const FLG_CONTENT_CHECKSUM = 0x04;
const FLG_RESERVED = 0x02;
const FLG_DICT_ID = 0x01;

const BLOCK_MAX_SIZES: Readonly<Record<number, number>> = { 4: 64 << 10, 5: 256 << 10, 6: 1 << 20, 7: 4 << 20 };

/** How much a frame's decoded-size bound may exceed the expected size before it is refused. */
const DECODE_SLACK = 4 << 20;

export interface Lz4FrameHeader {
  /** Bytes from the magic up to and including the header checksum. */
  headerSize: number;
  /** The content-size field, when present. */
  contentSize?: number;
  blockChecksum: boolean;
  contentChecksum: boolean;
  blockMaxSize: number;
}

const headerChecksum = (desc: Buffer): number => (xxh32(desc, 0) >>> 8) & 0xff;

/**
 * Compress one chunk into one complete LZ4 frame (FORMAT.md §3.2: 64 KiB blocks, block
 * checksums, content size, content checksum) at `level` (0–2 fast, ≥ 3 HC) with liblz4 through
 * the native addon (lz4-napi's compressors never free their output: native/lz4.cc).
 */
export function compressChunk(data: Buffer, level = 2): Buffer {
  const n = lz4Native();
  const dst = Buffer.allocUnsafe(n.lz4CompressBound(data.length));
  return dst.subarray(0, n.lz4CompressFrame(data, dst, Math.max(0, level)));
}

/** compressChunk() on the libuv thread pool. `data` must not change until the promise settles. */
export async function compressChunkAsync(data: Buffer, level = 2): Promise<Buffer> {
  const n = lz4Native();
  const dst = Buffer.allocUnsafe(n.lz4CompressBound(data.length));
  const len = await n.lz4CompressFrameAsync(data, dst, Math.max(0, level));
  // a copy of the exact size, so that the ~32 MiB bound allocation is not kept alive by a slice
  return len > dst.length - (dst.length >> 4) ? dst.subarray(0, len) : Buffer.from(dst.subarray(0, len));
}

/**
 * Parse and validate the header of the LZ4 frame at the start of `buf` (read at `offset` of
 * `file`): magic (skippable frames are errors), version, reserved bits, block size, header checksum.
 */
export function parseLz4FrameHeader(buf: Buffer, file: string, offset: number): Lz4FrameHeader {
  const bad = (at: number, reason: string): SavesetFormatError => new SavesetFormatError(file, offset + at, `corrupt LZ4 frame: ${reason}`);
  if (buf.length < 7) throw bad(0, 'truncated frame header');
  const magic = buf.readUInt32LE(0);
  if ((magic & 0xfffffff0) === 0x184d2a50) throw bad(0, 'skippable LZ4 frame not allowed');
  if (magic !== MAGIC) throw bad(0, 'bad magic number');
  const flg = buf[4]!;
  const bd = buf[5]!;
  if ((flg & FLG_VERSION_MASK) !== FLG_VERSION_01) throw bad(4, `unsupported frame version ${flg >> 6}`);
  if (flg & FLG_RESERVED) throw bad(4, 'reserved FLG bit set');
  if (bd & 0x8f) throw bad(5, 'reserved BD bits set');
  const blockMaxSize = BLOCK_MAX_SIZES[(bd >> 4) & 7];
  if (blockMaxSize === undefined) throw bad(5, `invalid block maximum size id ${(bd >> 4) & 7}`);
  if (flg & FLG_DICT_ID) throw bad(4, 'frames that need a dictionary are not supported');
  const hasSize = (flg & FLG_CONTENT_SIZE) !== 0;
  const headerSize = 7 + (hasSize ? 8 : 0);
  if (buf.length < headerSize) throw bad(0, 'truncated frame header');
  let contentSize: number | undefined;
  if (hasSize) {
    const v = buf.readBigUInt64LE(6);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(6, 'content size exceeds 2^53-1');
    contentSize = Number(v);
  }
  if (headerChecksum(buf.subarray(4, headerSize - 1)) !== buf[headerSize - 1]) throw bad(headerSize - 1, 'header checksum mismatch');
  const h: Lz4FrameHeader = {
    headerSize,
    blockChecksum: (flg & FLG_BLOCK_CHECKSUM) !== 0,
    contentChecksum: (flg & FLG_CONTENT_CHECKSUM) !== 0,
    blockMaxSize,
  };
  if (contentSize !== undefined) h.contentSize = contentSize;
  return h;
}

/**
 * Walk the block structure of the complete frame in `frame` without decoding: returns the frame's
 * end and an upper bound of its decoded size.
 */
function walkBlocks(frame: Buffer, h: Lz4FrameHeader, file: string, offset: number): { end: number; bound: number } {
  let pos = h.headerSize;
  let bound = 0;
  for (;;) {
    if (pos + 4 > frame.length) throw new SavesetFormatError(file, offset + pos, 'corrupt LZ4 frame: truncated (no end mark)');
    const word = frame.readUInt32LE(pos);
    if (word === 0) {
      pos += 4 + (h.contentChecksum ? 4 : 0);
      if (pos > frame.length) throw new SavesetFormatError(file, offset + frame.length, 'corrupt LZ4 frame: truncated content checksum');
      return { end: pos, bound };
    }
    const stored = (word & 0x80000000) !== 0;
    const size = word & 0x7fffffff;
    if (size > h.blockMaxSize) {
      throw new SavesetFormatError(file, offset + pos, `corrupt LZ4 frame: block of ${size} bytes exceeds the maximum ${h.blockMaxSize}`);
    }
    // A compressed block decodes to at most 255 bytes per input byte (and never beyond the maximum).
    bound += stored ? size : Math.min(h.blockMaxSize, size * 256);
    const next = pos + 4 + size + (h.blockChecksum ? 4 : 0);
    // name the block that runs past the frame, not an offset beyond it (found by fuzz/)
    if (next > frame.length) {
      throw new SavesetFormatError(file, offset + pos, `corrupt LZ4 frame: block of ${size} bytes runs past the end of the frame`);
    }
    pos = next;
  }
}

/** Everything that can be checked before decoding; returns the check to run on the decoded bytes. */
function checkBeforeDecode(frame: Buffer, file: string, offset: number, exact: number | undefined, max: number): { size: number; finish: (decode: () => Buffer) => Buffer } {
  const h = parseLz4FrameHeader(frame, file, offset);
  const bad = (reason: string): SavesetFormatError => new SavesetFormatError(file, offset, `corrupt LZ4 frame: ${reason}`);
  if (exact !== undefined && h.contentSize !== undefined && h.contentSize !== exact) {
    throw bad(`content size field ${h.contentSize} differs from the expected ${exact} bytes`);
  }
  if (h.contentSize !== undefined && h.contentSize > max) throw bad(`content size ${h.contentSize} exceeds the limit of ${max} bytes`);
  const { end, bound } = walkBlocks(frame, h, file, offset);
  if (end !== frame.length) {
    throw new SavesetFormatError(file, offset + end, `corrupt LZ4 frame: ${frame.length - end} bytes after the end of the frame`);
  }
  if (exact !== undefined && bound < exact) throw bad(`blocks cannot decode to the expected ${exact} bytes`);
  if (bound > (exact ?? max) + Math.max(DECODE_SLACK, h.blockMaxSize)) {
    throw bad(`blocks could decode to more than ${exact ?? max} bytes`);
  }
  const size = exact ?? h.contentSize ?? max;
  const finish = (decode: () => Buffer): Buffer => {
    let out: Buffer;
    try {
      out = decode();
    } catch (e) {
      throw bad(`decoding failed (${(e as Error).message})`);
    }
    if (exact !== undefined && out.length !== exact) throw bad(`decoded to ${out.length} bytes, expected ${exact}`);
    if (out.length > max) throw bad(`decoded to ${out.length} bytes, more than the limit of ${max}`);
    if (h.contentSize !== undefined && out.length !== h.contentSize) {
      throw bad(`decoded to ${out.length} bytes, content size field says ${h.contentSize}`);
    }
    return out;
  };
  return { size, finish };
}

interface Lz4Native {
  lz4DecodeFrame(src: Buffer, dst: Buffer): number;
  lz4DecodeFrameAsync(src: Buffer, dst: Buffer): Promise<number>;
  lz4CompressBound(length: number): number;
  lz4CompressFrame(src: Buffer, dst: Buffer, level: number): number;
  lz4CompressFrameAsync(src: Buffer, dst: Buffer, level: number): Promise<number>;
}

/** liblz4 through the native addon (native/lz4.cc: why not lz4-napi's decoders). */
function lz4Native(): Lz4Native {
  return loadNative() as unknown as Lz4Native;
}

function decodeChecked(frame: Buffer, file: string, offset: number, exact: number | undefined, max: number, into?: Buffer): Buffer {
  const { size, finish } = checkBeforeDecode(frame, file, offset, exact, max);
  if (into !== undefined && into.length < size) throw new RangeError(`decodeLz4Frame: buffer of ${into.length} bytes for ${size}`);
  return finish(() => {
    const dst = into ? into.subarray(0, size) : Buffer.allocUnsafe(size);
    const n = lz4Native().lz4DecodeFrame(frame, dst);
    return n === size ? dst : dst.subarray(0, n);
  });
}

/**
 * Decode exactly one complete LZ4 frame (`frame` was read at `offset` of `file`), which must decode
 * to `expectedSize` bytes; every checksum present is verified, trailing bytes are rejected.
 * With `into`, decodes into its first expectedSize bytes (a reused buffer: no allocation, no
 * page faults per frame) and returns that view.
 */
export function decodeLz4Frame(frame: Buffer, expectedSize: number, file: string, offset: number, into?: Buffer): Buffer {
  return decodeChecked(frame, file, offset, expectedSize, expectedSize, into);
}

/**
 * decodeLz4Frame on the libuv thread pool, with the same checks (liblz4 via the native addon:
 * lz4-napi 2.10's decoders, sync and async, never free their output, see native/lz4.cc).
 * With `into`, decodes into its first expectedSize bytes and returns that view.
 */
export async function decodeLz4FrameAsync(frame: Buffer, expectedSize: number, file: string, offset: number, into?: Buffer): Promise<Buffer> {
  const { size, finish } = checkBeforeDecode(frame, file, offset, expectedSize, expectedSize);
  let decoded: Buffer | undefined;
  let failure: unknown;
  if (into !== undefined && into.length < size) throw new RangeError(`decodeLz4FrameAsync: buffer of ${into.length} bytes for ${size}`);
  try {
    // `into` (a reused buffer of the caller's, e.g. the restore copier's pool): no allocation and no GC per frame
    const dst = into ? into.subarray(0, size) : Buffer.allocUnsafe(size);
    const n = await lz4Native().lz4DecodeFrameAsync(frame, dst);
    decoded = n === size ? dst : dst.subarray(0, n);
  } catch (e) {
    failure = e;
  }
  return finish(() => {
    if (decoded === undefined) throw failure;
    return decoded;
  });
}

/** Like decodeLz4Frame for a frame of unknown decoded size, refusing more than `maxSize` bytes. */
export function decodeLz4FrameUnsized(frame: Buffer, maxSize: number, file: string, offset: number): Buffer {
  return decodeChecked(frame, file, offset, undefined, maxSize);
}
