/**
 * ZipStreamWriter (FORMAT.md §7): archives written through real pipes are read back with
 * `unzip`, Python's zipfile and an independent byte walker that checks the §7 layout.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { execa } from 'execa';
import { ZipStreamWriter, ZipWriterError, type ZipStreamOptions } from '../../../src/zip/writer.js';
import { centralHeader, dataDescriptor, dosDateTime, endRecords } from '../../../src/zip/records.js';
import { prng } from '../../../src/devtools/prng.js';
import { parseCentral, parseZip, walkLocal } from './zip-layout.js';

const PY = '/usr/bin/python3';
const dir = mkdtempSync(join(tmpdir(), 'virtnbd-zip-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const tmp = (ext = 'zip'): string => join(dir, `a${n++}.${ext}`);

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function bytes(len: number, seed: number): Buffer {
  const r = prng(seed);
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = Math.floor(r() * 256);
  return b;
}

/** Write an archive through a real pipe into `cat > file`; returns the file's bytes. */
async function viaCat(file: string, fill: (z: ZipStreamWriter) => Promise<void>, opts?: ZipStreamOptions): Promise<Buffer> {
  const child = execa('sh', ['-c', 'cat > "$1"', 'sh', file]);
  const z = new ZipStreamWriter(child.stdin!, opts);
  await fill(z);
  await z.finish();
  await child;
  return readFileSync(file);
}

/** Write an archive into a PassThrough and collect what comes out. */
async function viaPassThrough(fill: (z: ZipStreamWriter) => Promise<void>, opts?: ZipStreamOptions): Promise<Buffer> {
  const pt = new PassThrough({ highWaterMark: 4096 });
  const chunks: Buffer[] = [];
  pt.on('data', (c: Buffer) => chunks.push(c));
  const ended = new Promise((resolve) => pt.on('end', resolve));
  const z = new ZipStreamWriter(pt, opts);
  await fill(z);
  await z.finish();
  await ended;
  return Buffer.concat(chunks);
}

interface PyEntry {
  name: string;
  size: number;
  csize: number;
  crc: number;
  sha: string;
  dir: boolean;
  dt: number[];
  flags: number;
  method: number;
}

const PY_READ = `
import sys, json, zipfile, hashlib
with zipfile.ZipFile(sys.argv[1]) as z:
    bad = z.testzip()
    out = [dict(name=i.filename, size=i.file_size, csize=i.compress_size, crc=i.CRC,
                sha=hashlib.sha256(z.read(i)).hexdigest(), dir=i.is_dir(), dt=list(i.date_time),
                flags=i.flag_bits, method=i.compress_type) for i in z.infolist()]
print(json.dumps(dict(bad=bad, entries=out)))
`;

async function pyRead(file: string): Promise<PyEntry[]> {
  const { stdout } = await execa(PY, ['-c', PY_READ, file]);
  const r = JSON.parse(stdout) as { bad: string | null; entries: PyEntry[] };
  expect(r.bad).toBeNull();
  return r.entries;
}

async function unzipTest(file: string): Promise<void> {
  const { stdout } = await execa('unzip', ['-t', file]);
  expect(stdout).toMatch(/No errors detected/);
}

async function unzipNames(file: string): Promise<string[]> {
  const { stdout } = await execa('unzip', ['-Z1', file]);
  return stdout.split('\n').filter((l) => l !== '');
}

const MTIME = new Date(2026, 0, 2, 3, 4, 6);
const DT = [2026, 1, 2, 3, 4, 6];

describe('ZipStreamWriter', () => {
  test('several entries through a pipe: unzip, Python and the §7 byte layout agree', async () => {
    const big = bytes(200 * 1024 + 17, 1);
    const xml = Buffer.from('<domain type="kvm">\n  <name>vm1</name>\n</domain>\n');
    const cpt = Buffer.from('<domaincheckpoint/>\n');
    const names = ['sda.full.data', 'sda.full.data.chksum', 'empty.data', 'vmconfig.virtnbdbackup.0.xml', 'vm1.cpt', 'checkpoints/', 'checkpoints/virtnbdbackup.0.xml', 'bitlocker.ü.key'];
    const file = tmp();
    const archive = await viaCat(file, async (z) => {
      const e = z.startEntry('sda.full.data', { zip64: true, mtime: MTIME });
      // pieces of odd sizes from one reused buffer: the writer must not keep a reference
      const piece = Buffer.alloc(70000);
      let off = 0;
      for (const len of [1, 4095, 65536, 70000, 3, 65000]) {
        big.copy(piece, 0, off, off + len);
        await e.write(piece.subarray(0, len));
        piece.fill(0xee);
        off += len;
      }
      await e.write(big.subarray(off));
      await e.write(Buffer.alloc(0));
      expect(e.size).toBe(big.length);
      await e.end();
      expect(e.ended).toBe(true);
      await z.addFile('sda.full.data.chksum', Buffer.from('1731888446'), MTIME);
      await z.startEntry('empty.data', { zip64: true, mtime: MTIME }).end();
      await z.addFile('vmconfig.virtnbdbackup.0.xml', xml, MTIME);
      await z.addFile('vm1.cpt', Buffer.from('["virtnbdbackup.0"]'), MTIME);
      await z.addDirectory('checkpoints', MTIME);
      await z.addFile('checkpoints/virtnbdbackup.0.xml', cpt, MTIME);
      await z.addFile('bitlocker.ü.key', Buffer.from('key'), MTIME);
      expect(z.entryCount).toBe(8);
    });
    expect(archive.length).toBeGreaterThan(big.length);

    await unzipTest(file);
    expect(await unzipNames(file)).toEqual(names);

    const contents: Record<string, Buffer> = {
      'sda.full.data': big,
      'sda.full.data.chksum': Buffer.from('1731888446'),
      'empty.data': Buffer.alloc(0),
      'vmconfig.virtnbdbackup.0.xml': xml,
      'vm1.cpt': Buffer.from('["virtnbdbackup.0"]'),
      'checkpoints/': Buffer.alloc(0),
      'checkpoints/virtnbdbackup.0.xml': cpt,
      'bitlocker.ü.key': Buffer.from('key'),
    };
    const py = await pyRead(file);
    expect(py.map((p) => p.name)).toEqual(names);
    for (const p of py) {
      const want = contents[p.name]!;
      expect([p.name, p.sha, p.size, p.csize]).toEqual([p.name, sha(want), want.length, want.length]);
      expect(p.method).toBe(0);
      expect(p.flags & 0x0008).toBe(0x0008);
      expect(p.dir).toBe(p.name === 'checkpoints/');
      expect(p.dt).toEqual(DT);
    }

    const zip = parseZip(archive);
    expect(zip.zip64End).toBeUndefined();
    const data = new Set(['sda.full.data', 'empty.data']);
    const local = walkLocal(archive, zip, (name) => data.has(name));
    for (const l of local) {
      expect(l.method).toBe(0);
      expect(l.data.equals(contents[l.name]!)).toBe(true);
      expect(l.versionNeeded).toBe(data.has(l.name) ? 45 : 20);
      expect(l.flags).toBe(l.name.includes('ü') ? 0x0808 : 0x0008);
    }
    // descriptor sizes: 24 bytes for data entries, 16 otherwise
    expect(local.map((l) => l.descriptor.length)).toEqual([24, 16, 24, 16, 16, 16, 16, 16]);
    const dirEntry = zip.entries.find((c) => c.name === 'checkpoints/')!;
    expect(dirEntry.externalAttr & 0x10).toBe(0x10);
    expect(dirEntry.externalAttr >>> 16).toBe(0o040755);
    expect(zip.entries[0]!.externalAttr >>> 16).toBe(0o100644);
    // small entries need no ZIP64 extra in the central directory
    for (const c of zip.entries) expect(c.extra.length).toBe(0);
  });

  test('unzip extracts the entries with their contents', async () => {
    const file = tmp();
    const a = bytes(100000, 2);
    await viaCat(file, async (z) => {
      const e = z.startEntry('vda.inc.virtnbdbackup.1.data', { zip64: true, mtime: new Date() });
      await e.write(a);
      await e.end();
      await z.addDirectory('checkpoints/', MTIME);
      await z.addFile('checkpoints/virtnbdbackup.1.xml', Buffer.from('x'), MTIME);
    });
    const out = join(dir, `x${n++}`);
    await execa('unzip', ['-o', '-q', '-d', out, file]);
    expect(sha(readFileSync(join(out, 'vda.inc.virtnbdbackup.1.data')))).toBe(sha(a));
    expect(readFileSync(join(out, 'checkpoints/virtnbdbackup.1.xml'), 'latin1')).toBe('x');
  });

  test('local records are byte-identical to what Python zipfile writes to a pipe with force_zip64', async () => {
    const script = `
import sys, zipfile
z = zipfile.ZipFile(sys.stdout.buffer, 'x', zipfile.ZIP_STORED)
data = bytes(range(256)) * 1000 + b'tail'
i = zipfile.ZipInfo('sda.full.data', date_time=(2026, 1, 2, 3, 4, 6))
with z.open(i, 'w', force_zip64=True) as f:
    for k in range(0, len(data), 7000):
        f.write(data[k:k + 7000])
z.writestr(zipfile.ZipInfo('sda.full.data.chksum', date_time=(2026, 1, 2, 3, 4, 6)), b'12345')
z.close()
`;
    const { stdout } = await execa(PY, ['-c', script], { encoding: 'buffer' });
    const theirs = Buffer.from(stdout);
    const data = Buffer.concat([...Array.from({ length: 1000 }, () => Buffer.from(Array.from({ length: 256 }, (_, k) => k))), Buffer.from('tail')]);
    const ours = await viaPassThrough(async (z) => {
      const e = z.startEntry('sda.full.data', { zip64: true, mtime: MTIME });
      await e.write(data);
      await e.end();
      await z.addFile('sda.full.data.chksum', Buffer.from('12345'), MTIME);
    });
    const a = parseZip(ours);
    const b = parseZip(theirs);
    expect(a.cdOffset).toBe(b.cdOffset);
    const oursLocal = Buffer.from(ours.subarray(0, a.cdOffset));
    const theirsLocal = Buffer.from(theirs.subarray(0, b.cdOffset));
    // the only difference: version needed to extract of the ZIP64 local header (ours 4.5, Python 2.0)
    expect(oursLocal.readUInt16LE(4)).toBe(45);
    expect(theirsLocal.readUInt16LE(4)).toBe(20);
    oursLocal.writeUInt16LE(20, 4);
    expect(oursLocal.equals(theirsLocal)).toBe(true);
    for (const [x, y] of a.entries.map((c, i) => [c, b.entries[i]!] as const)) {
      expect([x.name, x.flags, x.method, x.time, x.date, x.crc, x.csize, x.usize, x.offset]).toEqual([y.name, y.flags, y.method, y.time, y.date, y.crc, y.csize, y.usize, y.offset]);
    }
  });

  test('ZIP64 structures: a small zip64 entry and forced ZIP64 end records are read by Python and unzip', async () => {
    const file = tmp();
    const payload = bytes(5000, 3);
    const archive = await viaCat(
      file,
      async (z) => {
        const e = z.startEntry('sdb.copy.data', { zip64: true, mtime: MTIME });
        await e.write(payload);
        await e.end();
        await z.addFile('sdb.copy.data.chksum', Buffer.from('7'), MTIME);
      },
      { forceZip64End: true },
    );
    await unzipTest(file);
    const py = await pyRead(file);
    expect(py.map((p) => [p.name, p.sha, p.size])).toEqual([
      ['sdb.copy.data', sha(payload), 5000],
      ['sdb.copy.data.chksum', sha(Buffer.from('7')), 1],
    ]);
    const zip = parseZip(archive);
    expect(zip.zip64End).toEqual({ recordOffset: zip.cdOffset + zip.cdSize, versionNeeded: 45, entries: 2, cdSize: zip.cdSize, cdOffset: zip.cdOffset });
    expect(zip.eocd).toEqual({ entries: 2, cdSize: zip.cdSize, cdOffset: zip.cdOffset });
    const local = walkLocal(archive, zip, (name) => name === 'sdb.copy.data');
    expect(local[0]!.localExtra.toString('hex')).toBe(`01001000${'00'.repeat(16)}`);
    const d = local[0]!.descriptor;
    expect(d.length).toBe(24);
    expect(d.readUInt32LE(0)).toBe(0x08074b50);
    expect(Number(d.readBigUInt64LE(8))).toBe(5000);
    expect(Number(d.readBigUInt64LE(16))).toBe(5000);
    expect(zip.entries[0]!.versionNeeded).toBe(45);
  });

  test('records beyond 4 GiB: central ZIP64 extra, clamped end record, no 16-byte descriptor', () => {
    const dos = dosDateTime(MTIME);
    const c = centralHeader({ name: Buffer.from('big.data'), utf8: false, zip64: true, dos, crc: 0x12345678, size: 5 * 2 ** 30, offset: 6 * 2 ** 30, directory: false });
    const { entry, next } = parseCentral(c, 0);
    expect(next).toBe(c.length);
    expect(entry.raw).toEqual({ csize: 0xffffffff, usize: 0xffffffff, offset: 0xffffffff });
    expect([entry.usize, entry.csize, entry.offset, entry.crc, entry.versionNeeded]).toEqual([5 * 2 ** 30, 5 * 2 ** 30, 6 * 2 ** 30, 0x12345678, 45]);
    expect(entry.extra.length).toBe(28);
    const small = parseCentral(centralHeader({ name: Buffer.from('s'), utf8: false, zip64: false, dos, crc: 1, size: 10, offset: 6 * 2 ** 30, directory: false }), 0).entry;
    expect([small.raw.usize, small.raw.offset, small.offset, small.extra.length]).toEqual([10, 0xffffffff, 6 * 2 ** 30, 12]);

    const cdOffset = 7 * 2 ** 30;
    const end = endRecords({ entries: 70000, cdOffset, cdSize: 1000, forceZip64: false });
    expect(end.length).toBe(56 + 20 + 22);
    expect(end.readUInt32LE(0)).toBe(0x06064b50);
    expect(Number(end.readBigUInt64LE(32))).toBe(70000);
    expect(Number(end.readBigUInt64LE(48))).toBe(cdOffset);
    expect(end.readUInt32LE(56)).toBe(0x07064b50);
    expect(Number(end.readBigUInt64LE(64))).toBe(cdOffset + 1000);
    expect([end.readUInt16LE(76 + 10), end.readUInt32LE(76 + 12), end.readUInt32LE(76 + 16)]).toEqual([0xffff, 1000, 0xffffffff]);
    expect(endRecords({ entries: 3, cdOffset: 100, cdSize: 50, forceZip64: false }).length).toBe(22);

    expect(() => dataDescriptor(false, 0, 2 ** 32)).toThrow(RangeError);
    const d = dataDescriptor(true, 9, 2 ** 32 + 5);
    expect(Number(d.readBigUInt64LE(16))).toBe(2 ** 32 + 5);
  });

  test('DOS date and time in local time, clamped to the DOS range', () => {
    expect(dosDateTime(new Date(2026, 0, 2, 3, 4, 5))).toEqual({ date: (46 << 9) | (1 << 5) | 2, time: (3 << 11) | (4 << 5) | 2 });
    expect(dosDateTime(new Date(1970, 0, 1))).toEqual({ date: (1 << 5) | 1, time: 0 });
    expect(dosDateTime(new Date(2200, 5, 1))).toEqual({ date: (127 << 9) | (12 << 5) | 31, time: (23 << 11) | (59 << 5) | 29 });
  });

  test('backpressure: a slow output never holds more than its high-water mark plus one chunk', async () => {
    const hwm = 16384;
    let maxBuffered = 0;
    const got: Buffer[] = [];
    const slow = new Writable({
      highWaterMark: hwm,
      write(chunk: Buffer, _enc, cb) {
        maxBuffered = Math.max(maxBuffered, this.writableLength);
        got.push(chunk);
        setTimeout(cb, 1);
      },
    });
    const z = new ZipStreamWriter(slow);
    const e = z.startEntry('d.data', { zip64: true, mtime: MTIME });
    const buf = Buffer.alloc(65536);
    const want: string[] = [];
    for (let i = 0; i < 40; i++) {
      buf.fill(i);
      want.push(sha(buf));
      await e.write(buf);
    }
    await e.end();
    await z.finish();
    expect(maxBuffered).toBeLessThanOrEqual(hwm + 65536 + 1024);
    const archive = Buffer.concat(got);
    const zip = parseZip(archive);
    const [l] = walkLocal(archive, zip, () => true);
    const parts = Array.from({ length: 40 }, (_, i) => sha(l!.data.subarray(i * 65536, (i + 1) * 65536)));
    expect(parts).toEqual(want);
  });

  test('one entry at a time, valid names only, nothing after finish()', async () => {
    const archive = await viaPassThrough(async (z) => {
      const e = z.startEntry('a.data', { zip64: true, mtime: MTIME });
      expect(() => z.startEntry('b.data', { zip64: true, mtime: MTIME })).toThrow(ZipWriterError);
      await expect(z.addFile('c', Buffer.from('c'), MTIME)).rejects.toBeInstanceOf(ZipWriterError);
      const w1 = e.write(Buffer.from('x'));
      await expect(e.write(Buffer.from('y'))).rejects.toBeInstanceOf(ZipWriterError); // overlapping
      await w1;
      await e.end();
      await expect(e.write(Buffer.from('z'))).rejects.toBeInstanceOf(ZipWriterError);
      await expect(e.end()).rejects.toBeInstanceOf(ZipWriterError);
      for (const bad of ['', '/abs', './x', 'a/../b', 'a//b', 'x/', 'a\\b', 'nul\0']) {
        expect(() => z.startEntry(bad, { zip64: false, mtime: MTIME })).toThrow(ZipWriterError);
      }
      expect(() => z.startEntry('a.data', { zip64: false, mtime: MTIME })).toThrow(ZipWriterError); // duplicate
      expect(() => z.startEntry('t', { zip64: false, mtime: new Date(NaN) })).toThrow(ZipWriterError);
      await z.addDirectory('d', MTIME);
      await expect(z.addDirectory('d/', MTIME)).rejects.toBeInstanceOf(ZipWriterError); // duplicate
    });
    const zip = parseZip(archive);
    expect(zip.entries.map((c) => c.name)).toEqual(['a.data', 'd/']);
    expect(walkLocal(archive, zip, (name) => name === 'a.data')[0]!.data.toString()).toBe('x');
  });

  test('finish() ends an entry still open, so the archive stays readable after an error', async () => {
    const file = tmp();
    const part = bytes(1000, 4);
    let z: ZipStreamWriter | undefined;
    await viaCat(file, async (zz) => {
      z = zz;
      await zz.addFile('vmconfig.x.xml', Buffer.from('<domain/>'), MTIME);
      const e = zz.startEntry('sda.full.data', { zip64: true, mtime: MTIME });
      await e.write(part);
    });
    expect(() => z!.startEntry('late', { zip64: false, mtime: MTIME })).toThrow(ZipWriterError);
    await expect(z!.finish()).resolves.toBeUndefined(); // same promise again
    await unzipTest(file);
    const py = await pyRead(file);
    expect(py.map((p) => [p.name, p.sha])).toEqual([
      ['vmconfig.x.xml', sha(Buffer.from('<domain/>'))],
      ['sda.full.data', sha(part)],
    ]);
  });

  test('a failing output rejects writes and finish() instead of crashing', async () => {
    const sink = new Writable({
      write(_c: Buffer, _e, cb) {
        setImmediate(cb);
      },
    });
    const z = new ZipStreamWriter(sink);
    const e = z.startEntry('a.data', { zip64: true, mtime: MTIME });
    await e.write(Buffer.alloc(100));
    const boom = new Error('EPIPE (simulated)');
    sink.destroy(boom);
    await new Promise((resolve) => setImmediate(resolve));
    await expect(e.write(Buffer.alloc(100))).rejects.toBe(boom);
    await expect(z.finish()).rejects.toBe(boom);
  });

  test('endOutput: false leaves the stream open after the end records', async () => {
    const pt = new PassThrough();
    const chunks: Buffer[] = [];
    pt.on('data', (c: Buffer) => chunks.push(c));
    const z = new ZipStreamWriter(pt, { endOutput: false });
    await z.addFile('f', Buffer.from('hello'), MTIME);
    await z.finish();
    expect(pt.writableEnded).toBe(false);
    pt.end();
    await new Promise((resolve) => pt.on('end', resolve));
    const archive = Buffer.concat(chunks);
    expect(archive.length).toBe(z.bytesWritten);
    const file = tmp();
    writeFileSync(file, archive);
    expect((await pyRead(file)).map((p) => [p.name, p.sha])).toEqual([['f', sha(Buffer.from('hello'))]]);
  });
});
