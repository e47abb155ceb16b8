import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { Adler32, adler32File, formatChecksum, parseChecksumFile } from '../../../src/saveset/adler32.js';
import { prng } from '../../../src/devtools/prng.js';
import { tempDir } from './helpers.js';

describe('Adler32', () => {
  test('known values, streaming = one shot, unsigned', () => {
    const a = new Adler32();
    expect(a.digest()).toBe(1);
    a.update(Buffer.from('Wiki'));
    a.update(new Uint8Array(0));
    a.update(Buffer.from('pedia'));
    expect(a.digest()).toBe(0x11e60398);
    const big = new Adler32();
    big.update(Buffer.alloc(100, 0xff)); // a value with bit 31 set
    const zlib = Number(execFileSync('python3', ['-c', 'import zlib; print(zlib.adler32(b"\\xff"*100))']).toString());
    expect(big.digest()).toBe(zlib);
    expect(zlib).toBeGreaterThan(2 ** 31);
  });
  test('adler32File over a multi-read file equals zlib', async () => {
    const t = tempDir();
    try {
      const r = prng(7);
      const data = Buffer.alloc(9 * 1024 * 1024 + 13);
      for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((r() * 2 ** 32) >>> 0, Math.min(i, data.length - 4));
      const p = join(t.dir, 'x');
      writeFileSync(p, data);
      const zlib = Number(execFileSync('python3', ['-c', 'import zlib,sys; print(zlib.adler32(open(sys.argv[1],"rb").read()))', p]).toString());
      expect(await adler32File(p)).toBe(zlib);
    } finally {
      t.cleanup();
    }
  });
});

describe('checksum file', () => {
  test('format: decimal, no newline', () => {
    expect(formatChecksum(3709505515)).toBe('3709505515');
    expect(formatChecksum(0)).toBe('0');
    expect(() => formatChecksum(2 ** 32)).toThrow(RangeError);
    expect(() => formatChecksum(-1)).toThrow(RangeError);
  });
  test('parse (check 19)', () => {
    expect(parseChecksumFile('1731888446')).toBe(1731888446);
    expect(parseChecksumFile('1731888446\n')).toBe(1731888446);
    expect(parseChecksumFile('42 \r\n\t')).toBe(42);
    expect(parseChecksumFile('0004294967295')).toBe(4294967295);
    expect(parseChecksumFile('4294967296')).toBeUndefined();
    expect(parseChecksumFile('99999999999999999999999')).toBeUndefined();
    expect(parseChecksumFile('None')).toBeUndefined();
    expect(parseChecksumFile('')).toBeUndefined();
    expect(parseChecksumFile(' 42')).toBeUndefined();
    expect(parseChecksumFile('-42')).toBeUndefined();
    expect(parseChecksumFile('+42')).toBeUndefined();
    expect(parseChecksumFile('4.2')).toBeUndefined();
    expect(parseChecksumFile('42\n43')).toBeUndefined();
    expect(parseChecksumFile('0x2a')).toBeUndefined();
  });
});
