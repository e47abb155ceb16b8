/**
 * Byte layouts of the ZIP records written by the streaming zip writer (PKWARE APPNOTE 6.3,
 * FORMAT.md §7): local file header, data descriptor, central directory header, ZIP64 end of
 * central directory record and locator, end of central directory record; and DOS date/time.
 * Everything little-endian; 64-bit fields are written from safe integers.
 */

export const SIG_LOCAL = 0x04034b50;
export const SIG_DESCRIPTOR = 0x08074b50;
export const SIG_CENTRAL = 0x02014b50;
export const SIG_ZIP64_EOCD = 0x06064b50;
export const SIG_ZIP64_LOCATOR = 0x07064b50;
export const SIG_EOCD = 0x06054b50;

/** General-purpose flag bit 3: CRC-32 and sizes follow the data in a data descriptor. */
export const FLAG_DESCRIPTOR = 0x0008;
/** General-purpose flag bit 11: the name is UTF-8 (set only for non-ASCII names). */
export const FLAG_UTF8 = 0x0800;
export const METHOD_STORED = 0;
export const VERSION_DEFAULT = 20;
export const VERSION_ZIP64 = 45;
/** Version made by: host 3 (Unix), specification 4.5. */
export const VERSION_MADE_BY = (3 << 8) | VERSION_ZIP64;
/** A 4-byte field holding this value points into the ZIP64 extra field. */
export const MAX32 = 0xffffffff;
export const MAX16 = 0xffff;
export const ZIP64_EXTRA_ID = 0x0001;

export const LOCAL_HEADER_LEN = 30;
export const LOCAL_ZIP64_EXTRA_LEN = 20;
export const DESCRIPTOR_LEN = 16;
export const DESCRIPTOR64_LEN = 24;
export const CENTRAL_HEADER_LEN = 46;
export const ZIP64_EOCD_LEN = 56;
export const ZIP64_LOCATOR_LEN = 20;
export const EOCD_LEN = 22;

/** Unix mode bits in the high 16 bits of the external attributes; 0x10 = MS-DOS directory. */
export const ATTR_FILE = (0o100644 << 16) >>> 0;
export const ATTR_DIR = ((0o040755 << 16) | 0x10) >>> 0;

export interface DosDateTime {
  time: number;
  date: number;
}

/** DOS date and time of `d` in local time, clamped to 1980-01-01 … 2107-12-31 23:59:58. */
export function dosDateTime(d: Date): DosDateTime {
  const year = d.getFullYear();
  if (!Number.isFinite(year) || year < 1980) return { time: 0, date: (1 << 5) | 1 };
  if (year > 2107) return { time: (23 << 11) | (59 << 5) | 29, date: (127 << 9) | (12 << 5) | 31 };
  return {
    time: (d.getHours() << 11) | (d.getMinutes() << 5) | (d.getSeconds() >> 1),
    date: ((year - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate(),
  };
}

const u64 = (b: Buffer, v: number, off: number): void => {
  b.writeBigUInt64LE(BigInt(v), off);
};

export interface LocalHeaderFields {
  name: Buffer;
  utf8: boolean;
  zip64: boolean;
  dos: DosDateTime;
}

/**
 * Local file header with bit 3 set: CRC-32 and both sizes 0. A ZIP64 entry carries a ZIP64
 * extra field whose two 8-byte sizes are 0 as well (the values follow in a 24-byte descriptor).
 */
export function localHeader(f: LocalHeaderFields): Buffer {
  const extraLen = f.zip64 ? LOCAL_ZIP64_EXTRA_LEN : 0;
  const b = Buffer.alloc(LOCAL_HEADER_LEN + f.name.length + extraLen);
  b.writeUInt32LE(SIG_LOCAL, 0);
  b.writeUInt16LE(f.zip64 ? VERSION_ZIP64 : VERSION_DEFAULT, 4);
  b.writeUInt16LE(FLAG_DESCRIPTOR | (f.utf8 ? FLAG_UTF8 : 0), 6);
  b.writeUInt16LE(METHOD_STORED, 8);
  b.writeUInt16LE(f.dos.time, 10);
  b.writeUInt16LE(f.dos.date, 12);
  // CRC-32 (14), compressed size (18), uncompressed size (22): 0
  b.writeUInt16LE(f.name.length, 26);
  b.writeUInt16LE(extraLen, 28);
  f.name.copy(b, LOCAL_HEADER_LEN);
  if (f.zip64) {
    const x = LOCAL_HEADER_LEN + f.name.length;
    b.writeUInt16LE(ZIP64_EXTRA_ID, x);
    b.writeUInt16LE(16, x + 2);
    // original size (x+4) and compressed size (x+12): 0
  }
  return b;
}

/** Data descriptor with signature: 24 bytes (8-byte sizes) for ZIP64 entries, else 16. */
export function dataDescriptor(zip64: boolean, crc: number, size: number): Buffer {
  if (zip64) {
    const b = Buffer.alloc(DESCRIPTOR64_LEN);
    b.writeUInt32LE(SIG_DESCRIPTOR, 0);
    b.writeUInt32LE(crc, 4);
    u64(b, size, 8); // compressed (= stored) size
    u64(b, size, 16); // uncompressed size
    return b;
  }
  if (size >= MAX32) throw new RangeError(`size ${size} does not fit a 16-byte data descriptor`);
  const b = Buffer.alloc(DESCRIPTOR_LEN);
  b.writeUInt32LE(SIG_DESCRIPTOR, 0);
  b.writeUInt32LE(crc, 4);
  b.writeUInt32LE(size, 8);
  b.writeUInt32LE(size, 12);
  return b;
}

export interface CentralFields extends LocalHeaderFields {
  crc: number;
  size: number;
  offset: number;
  directory: boolean;
}

/**
 * Central directory header. Sizes and the local header offset that do not fit 4 bytes are
 * 0xFFFFFFFF and follow in a ZIP64 extra field (sizes as a pair, then the offset).
 */
export function centralHeader(f: CentralFields): Buffer {
  const big: number[] = [];
  const sizeBig = f.size >= MAX32;
  const offBig = f.offset >= MAX32;
  if (sizeBig) big.push(f.size, f.size);
  if (offBig) big.push(f.offset);
  const extraLen = big.length > 0 ? 4 + 8 * big.length : 0;
  const b = Buffer.alloc(CENTRAL_HEADER_LEN + f.name.length + extraLen);
  b.writeUInt32LE(SIG_CENTRAL, 0);
  b.writeUInt16LE(VERSION_MADE_BY, 4);
  b.writeUInt16LE(f.zip64 || big.length > 0 ? VERSION_ZIP64 : VERSION_DEFAULT, 6);
  b.writeUInt16LE(FLAG_DESCRIPTOR | (f.utf8 ? FLAG_UTF8 : 0), 8);
  b.writeUInt16LE(METHOD_STORED, 10);
  b.writeUInt16LE(f.dos.time, 12);
  b.writeUInt16LE(f.dos.date, 14);
  b.writeUInt32LE(f.crc, 16);
  b.writeUInt32LE(sizeBig ? MAX32 : f.size, 20);
  b.writeUInt32LE(sizeBig ? MAX32 : f.size, 24);
  b.writeUInt16LE(f.name.length, 28);
  b.writeUInt16LE(extraLen, 30);
  // comment length (32), disk number start (34), internal attributes (36): 0
  b.writeUInt32LE(f.directory ? ATTR_DIR : ATTR_FILE, 38);
  b.writeUInt32LE(offBig ? MAX32 : f.offset, 42);
  f.name.copy(b, CENTRAL_HEADER_LEN);
  if (extraLen > 0) {
    let x = CENTRAL_HEADER_LEN + f.name.length;
    b.writeUInt16LE(ZIP64_EXTRA_ID, x);
    b.writeUInt16LE(extraLen - 4, x + 2);
    x += 4;
    for (const v of big) {
      u64(b, v, x);
      x += 8;
    }
  }
  return b;
}

export interface EndFields {
  entries: number;
  cdOffset: number;
  cdSize: number;
  /** Write the ZIP64 end record and locator even when nothing overflows. */
  forceZip64: boolean;
}

/** True when the end of the archive needs the ZIP64 end record and locator. */
export function needsZip64End(f: EndFields): boolean {
  return f.forceZip64 || f.entries >= MAX16 || f.cdOffset >= MAX32 || f.cdSize >= MAX32;
}

/**
 * Everything after the central directory: (ZIP64 end record + locator when needed) and the end
 * of central directory record, whose fields are clamped to 0xFFFF / 0xFFFFFFFF in that case.
 */
export function endRecords(f: EndFields): Buffer {
  const parts: Buffer[] = [];
  if (needsZip64End(f)) {
    const z = Buffer.alloc(ZIP64_EOCD_LEN);
    z.writeUInt32LE(SIG_ZIP64_EOCD, 0);
    u64(z, ZIP64_EOCD_LEN - 12, 4);
    z.writeUInt16LE(VERSION_MADE_BY, 12);
    z.writeUInt16LE(VERSION_ZIP64, 14);
    // number of this disk (16), disk with the central directory (20): 0
    u64(z, f.entries, 24);
    u64(z, f.entries, 32);
    u64(z, f.cdSize, 40);
    u64(z, f.cdOffset, 48);
    const l = Buffer.alloc(ZIP64_LOCATOR_LEN);
    l.writeUInt32LE(SIG_ZIP64_LOCATOR, 0);
    // disk with the ZIP64 end record (4): 0
    u64(l, f.cdOffset + f.cdSize, 8);
    l.writeUInt32LE(1, 16);
    parts.push(z, l);
  }
  const e = Buffer.alloc(EOCD_LEN);
  e.writeUInt32LE(SIG_EOCD, 0);
  // number of this disk (4), disk with the central directory (6): 0
  e.writeUInt16LE(Math.min(f.entries, MAX16), 8);
  e.writeUInt16LE(Math.min(f.entries, MAX16), 10);
  e.writeUInt32LE(Math.min(f.cdSize, MAX32), 12);
  e.writeUInt32LE(Math.min(f.cdOffset, MAX32), 16);
  // comment length (20): 0
  parts.push(e);
  return Buffer.concat(parts);
}
