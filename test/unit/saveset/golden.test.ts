/** FORMAT.md §8: the toy disk, written by SavesetWriter. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { xxh32 } from '@node-rs/xxhash';
import { SavesetWriter } from '../../../src/saveset/writer.js';
import { decodeLz4Frame } from '../../../src/saveset/lz4.js';
import { indexSaveset } from '../../../src/saveset/reader.js';
import { meta, tempDir } from './helpers.js';

// §8 metadata JSON, verbatim
const JSON_TEXT = `{
    "virtualSize": 4096,
    "dataSize": 24,
    "date": "2026-01-02T03:04:05.678901",
    "diskName": "sda",
    "diskFormat": "qcow2",
    "checkpointName": "virtnbdbackup.0",
    "compressed": false,
    "compressionMethod": "lz4",
    "parentCheckpoint": "",
    "incremental": false,
    "streamVersion": 2
}`;

// §8.1 hex dump of everything after the JSON (offset 0x163 onwards), verbatim
const HEX_DUMP = `
00000163: 0d 0a 64 61 74 61 20 30 30 30 30 30 30 30 30 30  ..data 000000000
00000173: 30 30 30 30 30 30 30 20 30 30 30 30 30 30 30 30  0000000 00000000
00000183: 30 30 30 30 30 30 31 30 0d 0a 30 31 32 33 34 35  00000010..012345
00000193: 36 37 38 39 61 62 63 64 65 66 0d 0a 7a 65 72 6f  6789abcdef..zero
000001a3: 20 30 30 30 30 30 30 30 30 30 30 30 30 30 30 31   000000000000001
000001b3: 30 20 30 30 30 30 30 30 30 30 30 30 30 30 30 37  0 00000000000007
000001c3: 66 30 0d 0a 64 61 74 61 20 30 30 30 30 30 30 30  f0..data 0000000
000001d3: 30 30 30 30 30 30 38 30 30 20 30 30 30 30 30 30  000000800 000000
000001e3: 30 30 30 30 30 30 30 30 30 38 0d 0a 41 42 43 44  0000000008..ABCD
000001f3: 45 46 47 48 0d 0a 7a 65 72 6f 20 30 30 30 30 30  EFGH..zero 00000
00000203: 30 30 30 30 30 30 30 30 38 30 38 20 30 30 30 30  00000000808 0000
00000213: 30 30 30 30 30 30 30 30 30 37 66 38 0d 0a 73 74  0000000007f8..st
00000223: 6f 70 20 30 30 30 30 30 30 30 30 30 30 30 30 30  op 0000000000000
00000233: 30 30 30 20 30 30 30 30 30 30 30 30 30 30 30 30  000 000000000000
00000243: 30 30 30 30 0d 0a                                0000..
`;

function fromDump(dump: string): Buffer {
  const bytes: number[] = [];
  for (const line of dump.trim().split('\n')) {
    const hex = line.slice(10, 10 + 16 * 3).trim();
    for (const h of hex.split(/\s+/)) bytes.push(parseInt(h, 16));
  }
  return Buffer.from(bytes);
}

// §8.2: the 47-byte LZ4 frame of "0123456789abcdef", verbatim
const FRAME_16 = Buffer.from(
  '04224d18' + '7c' + '40' + '1000000000000000' + '69' + '10000080' + Buffer.from('0123456789abcdef').toString('hex') +
    '695bc4c2' + '00000000' + '695bc4c2',
  'hex',
);

async function writeToy(path: string, compress: false | 2): Promise<{ path: string; bytes: number; checksum: number }> {
  const w = await SavesetWriter.create(path, meta({ dataSize: 24, compressed: compress }), { compress });
  await w.data(0, Buffer.from('0123456789abcdef'));
  await w.zero(0x10, 0x7f0);
  await w.data(0x800, Buffer.from('ABCDEFGH'));
  await w.zero(0x808, 0x7f8);
  return w.finish();
}

describe('FORMAT.md §8 worked example', () => {
  const t = tempDir();
  afterAll(() => t.cleanup());

  test('§8.1 uncompressed: byte-identical, 585 bytes, .chksum 3709505515', async () => {
    const p = join(t.dir, 'sda.full.data');
    const r = await writeToy(p, false);
    const expected = Buffer.concat([
      Buffer.from('meta 0000000000000000 000000000000013b\r\n', 'latin1'),
      Buffer.from(JSON_TEXT, 'latin1'),
      fromDump(HEX_DUMP),
    ]);
    expect(expected.length).toBe(585);
    const got = readFileSync(p);
    expect(got.equals(expected)).toBe(true);
    expect(r).toEqual({ path: p, bytes: 585, checksum: 3709505515 });
    expect(readFileSync(`${p}.chksum`, 'latin1')).toBe('3709505515');
  });

  test('§8.2 compressed: structure, LZ4 frame header and content', async () => {
    const p = join(t.dir, 'sda.full.data.z');
    const r = await writeToy(p, 2);
    const f = readFileSync(p);
    expect(r.bytes).toBe(f.length);
    const json = JSON_TEXT.replace('"compressed": false', '"compressed": 2');
    expect(f.subarray(0, 40).toString('latin1')).toBe('meta 0000000000000000 0000000000000137\r\n');
    expect(f.subarray(40, 40 + 311).toString('latin1')).toBe(json);
    expect(f.subarray(0x161 - 2, 0x161 + 40).toString('latin1')).toBe('\r\ndata 0000000000000000 0000000000000010\r\n');
    const z1 = 0x189;
    // the LZ4 frame: magic, FLG with content size + both checksums, BD, size 16, HC
    expect(f.readUInt32LE(z1)).toBe(0x184d2204);
    const flg = f[z1 + 4]!;
    expect(flg & 0xdf).toBe(0x5c); // version 01, block checksum, content size, content checksum (independence bit free)
    expect(f[z1 + 5]).toBe(0x40);
    expect(Number(f.readBigUInt64LE(z1 + 6))).toBe(16);
    expect(f[z1 + 14]).toBe((xxh32(f.subarray(z1 + 4, z1 + 14), 0) >>> 8) & 0xff);
    // structure after it, with frame lengths taken from the trailer
    const tail = f.subarray(f.length - 40).toString('latin1');
    expect(tail).toMatch(/^comp 0000000000000000 [0-9a-f]{16}\r\n$/);
    const tlen = parseInt(tail.slice(22, 38), 16);
    const trailer = f.subarray(f.length - 42 - tlen, f.length - 42).toString('latin1');
    expect(f.subarray(f.length - 42, f.length - 40).toString('latin1')).toBe('\r\n');
    const m = /^\[(\d+), (\d+)\]$/.exec(trailer);
    expect(m).not.toBeNull();
    const [c1, c2] = [Number(m![1]), Number(m![2])];
    expect(decodeLz4Frame(f.subarray(z1, z1 + c1), 16, p, z1).toString()).toBe('0123456789abcdef');
    let at = z1 + c1;
    expect(f.subarray(at, at + 2 + 80).toString('latin1')).toBe(
      '\r\nzero 0000000000000010 00000000000007f0\r\ndata 0000000000000800 0000000000000008\r\n');
    at += 82;
    expect(decodeLz4Frame(f.subarray(at, at + c2), 8, p, at).toString()).toBe('ABCDEFGH');
    at += c2;
    expect(f.subarray(at, at + 82).toString('latin1')).toBe(
      '\r\nzero 0000000000000808 00000000000007f8\r\nstop 0000000000000000 0000000000000000\r\n');
    at += 82;
    expect(at).toBe(f.length - 42 - tlen);
    // our reader agrees
    const idx = indexSaveset(p);
    expect(idx.frames.map((x) => [x.kind, x.start, x.length])).toEqual([
      ['data', 0, 16], ['zero', 16, 0x7f0], ['data', 0x800, 8], ['zero', 0x808, 0x7f8]]);
  });

  test('§8.2 with today\'s liblz4 even the bytes match (stored blocks): 693 bytes, .chksum 4019954303', async () => {
    // Not a format guarantee (FORMAT.md §3.2): LZ4 bytes may differ across implementations.
    const p = join(t.dir, 'sda.full.data.z2');
    const r = await writeToy(p, 2);
    const f = readFileSync(p);
    expect(f.subarray(0x189, 0x189 + 47).equals(FRAME_16)).toBe(true);
    expect(f.length).toBe(693);
    expect(f.subarray(0x283, 0x28b).toString('latin1')).toBe('[47, 39]');
    expect(r.checksum).toBe(4019954303);
  });
});
