/**
 * An independent reader of ZIP bytes for the zip writer tests: parses the end records and the
 * central directory, then walks every local header, data and data descriptor in file order and
 * checks the FORMAT.md §7 layout rules on the way.
 */

export interface CdEntry {
  name: string;
  madeBy: number;
  versionNeeded: number;
  flags: number;
  method: number;
  time: number;
  date: number;
  crc: number;
  csize: number;
  usize: number;
  offset: number;
  externalAttr: number;
  /** Raw 4-byte fields before the ZIP64 extra was applied. */
  raw: { csize: number; usize: number; offset: number };
  extra: Buffer;
}

export interface Zip64End {
  recordOffset: number;
  versionNeeded: number;
  entries: number;
  cdSize: number;
  cdOffset: number;
}

export interface ParsedZip {
  entries: CdEntry[];
  cdOffset: number;
  cdSize: number;
  eocd: { entries: number; cdSize: number; cdOffset: number };
  zip64End: Zip64End | undefined;
}

export interface LocalEntry {
  name: string;
  versionNeeded: number;
  flags: number;
  method: number;
  time: number;
  date: number;
  localExtra: Buffer;
  data: Buffer;
  descriptor: Buffer;
}

const u64 = (b: Buffer, off: number): number => Number(b.readBigUInt64LE(off));

function fail(msg: string): never {
  throw new Error(`zip layout: ${msg}`);
}

/** One central directory header at `off`; returns the entry and the offset after it. */
export function parseCentral(buf: Buffer, off: number): { entry: CdEntry; next: number } {
  if (buf.readUInt32LE(off) !== 0x02014b50) fail(`no central header at ${off}`);
  const nameLen = buf.readUInt16LE(off + 28);
  const extraLen = buf.readUInt16LE(off + 30);
  const commentLen = buf.readUInt16LE(off + 32);
  const name = buf.subarray(off + 46, off + 46 + nameLen).toString('utf8');
  const extra = buf.subarray(off + 46 + nameLen, off + 46 + nameLen + extraLen);
  const raw = { csize: buf.readUInt32LE(off + 20), usize: buf.readUInt32LE(off + 24), offset: buf.readUInt32LE(off + 42) };
  let { csize, usize, offset } = raw;
  for (let x = 0; x + 4 <= extra.length; ) {
    const id = extra.readUInt16LE(x);
    const len = extra.readUInt16LE(x + 2);
    if (id === 1) {
      let p = x + 4;
      if (raw.usize === 0xffffffff) { usize = u64(extra, p); p += 8; }
      if (raw.csize === 0xffffffff) { csize = u64(extra, p); p += 8; }
      if (raw.offset === 0xffffffff) { offset = u64(extra, p); p += 8; }
      if (p !== x + 4 + len) fail(`ZIP64 extra of ${name} has ${len} bytes, used ${p - x - 4}`);
    }
    x += 4 + len;
  }
  const entry: CdEntry = {
    name,
    madeBy: buf.readUInt16LE(off + 4),
    versionNeeded: buf.readUInt16LE(off + 6),
    flags: buf.readUInt16LE(off + 8),
    method: buf.readUInt16LE(off + 10),
    time: buf.readUInt16LE(off + 12),
    date: buf.readUInt16LE(off + 14),
    crc: buf.readUInt32LE(off + 16),
    csize,
    usize,
    offset,
    externalAttr: buf.readUInt32LE(off + 38),
    raw,
    extra: Buffer.from(extra),
  };
  return { entry, next: off + 46 + nameLen + extraLen + commentLen };
}

/** End records and central directory. The archive must have no comment. */
export function parseZip(buf: Buffer): ParsedZip {
  const e = buf.length - 22;
  if (e < 0 || buf.readUInt32LE(e) !== 0x06054b50) fail('no end of central directory record at the end');
  if (buf.readUInt16LE(e + 20) !== 0) fail('archive comment present');
  const eocd = { entries: buf.readUInt16LE(e + 10), cdSize: buf.readUInt32LE(e + 12), cdOffset: buf.readUInt32LE(e + 16) };
  if (buf.readUInt16LE(e + 8) !== eocd.entries) fail('entries on this disk differ from total');
  let entries = eocd.entries;
  let cdSize = eocd.cdSize;
  let cdOffset = eocd.cdOffset;
  let zip64End: Zip64End | undefined;
  let cdEnd = e;
  if (e >= 20 && buf.readUInt32LE(e - 20) === 0x07064b50) {
    const l = e - 20;
    if (buf.readUInt32LE(l + 4) !== 0 || buf.readUInt32LE(l + 16) !== 1) fail('ZIP64 locator disk fields');
    const r = u64(buf, l + 8);
    if (r !== l - 56) fail(`ZIP64 end record at ${r}, expected right before the locator (${l - 56})`);
    if (buf.readUInt32LE(r) !== 0x06064b50) fail('no ZIP64 end record signature');
    if (u64(buf, r + 4) !== 44) fail('ZIP64 end record size field');
    const z: Zip64End = {
      recordOffset: r,
      versionNeeded: buf.readUInt16LE(r + 14),
      entries: u64(buf, r + 32),
      cdSize: u64(buf, r + 40),
      cdOffset: u64(buf, r + 48),
    };
    if (u64(buf, r + 24) !== z.entries) fail('ZIP64 entries on disk differ from total');
    zip64End = z;
    entries = z.entries;
    cdSize = z.cdSize;
    cdOffset = z.cdOffset;
    cdEnd = r;
  }
  if (cdOffset + cdSize !== cdEnd) fail(`central directory ${cdOffset}+${cdSize} does not end at ${cdEnd}`);
  const list: CdEntry[] = [];
  let off = cdOffset;
  for (let i = 0; i < entries; i++) {
    const { entry, next } = parseCentral(buf, off);
    list.push(entry);
    off = next;
  }
  if (off !== cdEnd) fail(`central directory entries end at ${off}, expected ${cdEnd}`);
  return { entries: list, cdOffset, cdSize, eocd, zip64End };
}

/**
 * Walk the entries in file order. Checks: each local header starts where the previous
 * descriptor ended, bit 3, CRC/sizes 0 in the local header, a ZIP64 extra with zero sizes
 * exactly for `zip64(name)` entries, the descriptor signature, CRC and sizes (8-byte for ZIP64
 * entries), and that the central directory follows the last descriptor.
 */
export function walkLocal(buf: Buffer, zip: ParsedZip, zip64: (name: string) => boolean): LocalEntry[] {
  const out: LocalEntry[] = [];
  let pos = 0;
  for (const c of zip.entries) {
    if (c.offset !== pos) fail(`${c.name}: local header at ${c.offset}, previous record ended at ${pos}`);
    if (buf.readUInt32LE(pos) !== 0x04034b50) fail(`${c.name}: no local header signature`);
    const flags = buf.readUInt16LE(pos + 6);
    if ((flags & 0x0008) === 0) fail(`${c.name}: bit 3 not set`);
    if (flags !== c.flags) fail(`${c.name}: local flags ${flags} differ from central ${c.flags}`);
    for (const f of [14, 18, 22]) if (buf.readUInt32LE(pos + f) !== 0) fail(`${c.name}: local field at +${f} not 0`);
    const nameLen = buf.readUInt16LE(pos + 26);
    const extraLen = buf.readUInt16LE(pos + 28);
    const name = buf.subarray(pos + 30, pos + 30 + nameLen).toString('utf8');
    if (name !== c.name) fail(`local name ${name} differs from central ${c.name}`);
    const localExtra = buf.subarray(pos + 30 + nameLen, pos + 30 + nameLen + extraLen);
    const z = zip64(name);
    if (z) {
      if (extraLen !== 20 || localExtra.readUInt16LE(0) !== 1 || localExtra.readUInt16LE(2) !== 16) fail(`${name}: no ZIP64 extra in the local header`);
      if (u64(localExtra, 4) !== 0 || u64(localExtra, 12) !== 0) fail(`${name}: ZIP64 extra sizes not 0`);
    } else if (extraLen !== 0) {
      fail(`${name}: unexpected local extra field`);
    }
    const dataStart = pos + 30 + nameLen + extraLen;
    const data = buf.subarray(dataStart, dataStart + c.usize);
    const d = dataStart + c.usize;
    const dlen = z ? 24 : 16;
    const descriptor = buf.subarray(d, d + dlen);
    if (descriptor.readUInt32LE(0) !== 0x08074b50) fail(`${name}: no descriptor signature`);
    if (descriptor.readUInt32LE(4) !== c.crc) fail(`${name}: descriptor CRC differs from the central directory`);
    const [cs, us] = z ? [u64(descriptor, 8), u64(descriptor, 16)] : [descriptor.readUInt32LE(8), descriptor.readUInt32LE(12)];
    if (cs !== c.csize || us !== c.usize) fail(`${name}: descriptor sizes ${cs}/${us}, central ${c.csize}/${c.usize}`);
    out.push({
      name,
      versionNeeded: buf.readUInt16LE(pos + 4),
      flags,
      method: buf.readUInt16LE(pos + 8),
      time: buf.readUInt16LE(pos + 10),
      date: buf.readUInt16LE(pos + 12),
      localExtra: Buffer.from(localExtra),
      data: Buffer.from(data),
      descriptor: Buffer.from(descriptor),
    });
    pos = d + dlen;
  }
  if (pos !== zip.cdOffset) fail(`central directory at ${zip.cdOffset}, last record ended at ${pos}`);
  return out;
}
