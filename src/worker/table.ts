/**
 * The binary extent table the worker hands the plugin shim (docs/PROTOCOL.md, "The table").
 * Little-endian; a 32-byte header, the file list, zero padding to a multiple of 8, then one
 * 48-byte record per extent. decodeTable applies the same checks as the shim.
 */
import { ExtentKind, type ExtentMap, type MapExtent } from '../chain/extent-map.js';

export const TABLE_MAGIC = 'VNBDTBL1';
export const TABLE_VERSION = 1;
export const TABLE_HEADER_LEN = 32;
export const TABLE_RECORD_LEN = 48;
/** Limits shared with the shim. */
export const MAX_TABLE_EXTENTS = 64 * 1024 * 1024;
export const MAX_FRAME_USIZE = 256 * 1024 * 1024;
export const MAX_PATH_BYTES = 65536;
const U32_MAX = 0xffff_ffff;

export class TableError extends Error {
  constructor(message: string) {
    super(`extent table: ${message}`);
    this.name = 'TableError';
  }
}

function checkExtent(e: MapExtent, i: number, end: number, size: number, nfiles: number): void {
  const fail = (why: string): never => {
    throw new TableError(`extent ${i} at ${e.start}: ${why}`);
  };
  for (const k of ['start', 'length', 'fileOffset', 'sliceOffset', 'csize', 'usize', 'file'] as const) {
    if (!Number.isSafeInteger(e[k]) || e[k] < 0) fail(`${k} is not a non-negative integer`);
  }
  if (e.start !== end) fail(`not contiguous (expected start ${end})`);
  if (e.length <= 0 || e.length > size - e.start) fail(`bad length ${e.length}`);
  if (e.kind !== ExtentKind.Zero && e.kind !== ExtentKind.Raw && e.kind !== ExtentKind.Lz4) fail(`bad kind ${e.kind}`);
  if (e.file >= nfiles) fail(`file index ${e.file} out of range (${nfiles} files)`);
  if (e.csize > U32_MAX || e.usize > U32_MAX || e.file > U32_MAX) fail('csize/usize/file exceed 32 bits');
  if (e.kind === ExtentKind.Zero && (e.fileOffset || e.sliceOffset || e.file || e.csize || e.usize)) fail('zero extent with a file position');
  if (e.kind === ExtentKind.Raw && (e.sliceOffset || e.csize || e.usize)) fail('raw extent with lz4 fields');
  if (e.kind === ExtentKind.Lz4) {
    if (e.csize === 0 || e.usize === 0 || e.usize > MAX_FRAME_USIZE) fail(`bad lz4 frame sizes ${e.csize}/${e.usize}`);
    // as the shim (plugin/vnbd-table.h vnbd_max_csize): no LZ4 writer expands data that much
    if (e.csize > 2 * e.usize + 65536) fail(`lz4 frame of ${e.csize} bytes for ${e.usize} decoded bytes`);
    if (e.sliceOffset + e.length > e.usize) fail('lz4 slice extends past the decoded frame');
  }
}

function checkMap(map: ExtentMap): void {
  if (!Number.isSafeInteger(map.size) || map.size < 0) throw new TableError(`bad size ${map.size}`);
  if (map.files.length === 0 || map.files.length > U32_MAX) throw new TableError(`bad file count ${map.files.length}`);
  if (map.extents.length > MAX_TABLE_EXTENTS) throw new TableError(`too many extents (${map.extents.length})`);
  let end = 0;
  map.extents.forEach((e, i) => {
    checkExtent(e, i, end, map.size, map.files.length);
    end = e.start + e.length;
  });
  if (end !== map.size) throw new TableError(`extents cover ${end} of ${map.size} bytes`);
}

const TWO32 = 2 ** 32;

/** Write a safe non-negative integer as u64 LE (no BigInt: tables can have millions of records). */
function w64(buf: Buffer, v: number, off: number): void {
  buf.writeUInt32LE(v % TWO32, off);
  buf.writeUInt32LE(Math.floor(v / TWO32), off + 4);
}

function u64(buf: Buffer, off: number, what: string): number {
  const hi = buf.readUInt32LE(off + 4);
  if (hi > 0x1f_ffff) throw new TableError(`${what} ${buf.readBigUInt64LE(off)} is too large`);
  return hi * TWO32 + buf.readUInt32LE(off);
}

/** Encode a resolved map (validated first: a bad map is a bug, never sent to the shim). */
export function encodeTable(map: ExtentMap): Buffer {
  checkMap(map);
  const paths = map.files.map((f) => Buffer.from(f, 'utf8'));
  for (const p of paths) if (p.length > MAX_PATH_BYTES) throw new TableError('file path too long');
  let off = TABLE_HEADER_LEN + paths.reduce((n, p) => n + 4 + p.length, 0);
  const recordsAt = Math.ceil(off / 8) * 8;
  const buf = Buffer.alloc(recordsAt + map.extents.length * TABLE_RECORD_LEN);
  buf.write(TABLE_MAGIC, 0, 'ascii');
  buf.writeUInt32LE(TABLE_VERSION, 8);
  buf.writeUInt32LE(paths.length, 12);
  w64(buf, map.extents.length, 16);
  w64(buf, map.size, 24);
  off = TABLE_HEADER_LEN;
  for (const p of paths) {
    buf.writeUInt32LE(p.length, off);
    p.copy(buf, off + 4);
    off += 4 + p.length;
  }
  off = recordsAt;
  for (const e of map.extents) {
    w64(buf, e.start, off);
    w64(buf, e.length, off + 8);
    w64(buf, e.fileOffset, off + 16);
    w64(buf, e.sliceOffset, off + 24);
    buf.writeUInt32LE(e.kind, off + 32);
    buf.writeUInt32LE(e.file, off + 36);
    buf.writeUInt32LE(e.csize, off + 40);
    buf.writeUInt32LE(e.usize, off + 44);
    off += TABLE_RECORD_LEN;
  }
  return buf;
}

/** Decode and validate a table (the checks of PROTOCOL.md, as the shim does them). */
export function decodeTable(buf: Buffer): ExtentMap {
  if (buf.length < TABLE_HEADER_LEN) throw new TableError(`too short (${buf.length} bytes)`);
  if (buf.toString('latin1', 0, 8) !== TABLE_MAGIC) throw new TableError('bad magic');
  const version = buf.readUInt32LE(8);
  if (version !== TABLE_VERSION) throw new TableError(`unsupported version ${version}`);
  const nfiles = buf.readUInt32LE(12);
  const n = u64(buf, 16, 'extent count');
  const size = u64(buf, 24, 'size');
  if (n > MAX_TABLE_EXTENTS) throw new TableError(`too many extents (${n})`);
  let off = TABLE_HEADER_LEN;
  const files: string[] = [];
  for (let i = 0; i < nfiles; i++) {
    if (buf.length - off < 4) throw new TableError('truncated file list');
    const len = buf.readUInt32LE(off);
    if (len > MAX_PATH_BYTES || buf.length - off - 4 < len) throw new TableError('truncated file list');
    files.push(buf.toString('utf8', off + 4, off + 4 + len));
    off += 4 + len;
  }
  for (; off % 8 !== 0; off++) {
    if (off >= buf.length || buf[off] !== 0) throw new TableError('bad padding after the file list');
  }
  if (buf.length - off !== n * TABLE_RECORD_LEN) {
    throw new TableError(`${buf.length - off} bytes of records for ${n} extents`);
  }
  const extents: MapExtent[] = new Array(n);
  for (let i = 0; i < n; i++, off += TABLE_RECORD_LEN) {
    extents[i] = {
      start: u64(buf, off, 'start'),
      length: u64(buf, off + 8, 'length'),
      fileOffset: u64(buf, off + 16, 'fileOffset'),
      sliceOffset: u64(buf, off + 24, 'sliceOffset'),
      kind: buf.readUInt32LE(off + 32) as ExtentKind,
      file: buf.readUInt32LE(off + 36),
      csize: buf.readUInt32LE(off + 40),
      usize: buf.readUInt32LE(off + 44),
    };
  }
  const map: ExtentMap = { size, files, extents };
  checkMap(map);
  return map;
}
