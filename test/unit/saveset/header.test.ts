import { formatHeader, parseHeader } from '../../../src/saveset/header.js';
import { SavesetFormatError } from '../../../src/saveset/types.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

function parseErr(s: string): SavesetFormatError {
  try {
    parseHeader(b(s), 'f', 100);
  } catch (e) {
    expect(e).toBeInstanceOf(SavesetFormatError);
    return e as SavesetFormatError;
  }
  throw new Error(`accepted ${JSON.stringify(s)}`);
}

describe('formatHeader', () => {
  test('exact 40-byte shape, lower-case hex', () => {
    const h = formatHeader('zero', 0x10, 0x7f0);
    expect(h.toString('latin1')).toBe('zero 0000000000000010 00000000000007f0\r\n');
    expect(h.length).toBe(40);
    expect(formatHeader('data', Number.MAX_SAFE_INTEGER, 0xabcdef).toString('latin1')).toBe('data 001fffffffffffff 0000000000abcdef\r\n');
  });
  test('refuses bad numbers and kinds', () => {
    expect(() => formatHeader('data', -1, 1)).toThrow(RangeError);
    expect(() => formatHeader('data', 1.5, 1)).toThrow(RangeError);
    expect(() => formatHeader('data', 0, 2 ** 53)).toThrow(RangeError);
    expect(() => formatHeader('hole' as never, 0, 1)).toThrow(RangeError);
  });
});

describe('parseHeader', () => {
  test('round trip of every kind', () => {
    for (const k of ['meta', 'data', 'zero', 'stop', 'comp'] as const) {
      expect(parseHeader(formatHeader(k, 123456789012, 42), 'f', 0)).toEqual({ kind: k, start: 123456789012, length: 42 });
    }
  });
  test('upper-case hex digits accepted', () => {
    expect(parseHeader(b('data 00000000000ABCDE 00000000000007F0\r\n'), 'f', 0)).toEqual({ kind: 'data', start: 0xabcde, length: 0x7f0 });
  });
  test('2^53-1 accepted, 2^53 and above rejected', () => {
    expect(parseHeader(b('data 001fffffffffffff 0000000000000001\r\n'), 'f', 0).start).toBe(Number.MAX_SAFE_INTEGER);
    expect(parseErr('data 0020000000000000 0000000000000001\r\n').offset).toBe(105);
    expect(parseErr('data 0000000000000000 ffffffffffffffff\r\n').offset).toBe(122);
  });
  test('every malformed shape is rejected with the offending offset', () => {
    expect(parseErr('hole 0000000000000000 0000000000000001\r\n').offset).toBe(100);
    expect(parseErr('DATA 0000000000000000 0000000000000001\r\n').offset).toBe(100);
    expect(parseErr('data_0000000000000000 0000000000000001\r\n').offset).toBe(104);
    expect(parseErr('data 0000000000000000_0000000000000001\r\n').offset).toBe(121);
    expect(parseErr('data 0000000000000000 0000000000000001\n\n').offset).toBe(138);
    expect(parseErr('data 0000000000000000 0000000000000001\r\r').offset).toBe(138);
    expect(parseErr('data 000000000000000g 0000000000000001\r\n').offset).toBe(120);
    expect(parseErr('data 0000000000000000 000000000000 001\r\n').offset).toBe(134);
    expect(parseErr('data 0000000000000000 -000000000000001\r\n').offset).toBe(122);
    expect(parseErr('data 0x00000000000000 0000000000000001\r\n').offset).toBe(106);
    expect(parseErr('data 0000000000000000 000000000000001\r\r\n').offset).toBe(137); // 15 digits
    expect(parseErr('data 0000000000000000 000000000000001\r\n').reason).toMatch(/truncated/);
    expect(parseErr('').reason).toMatch(/truncated/);
  });
});
