/**
 * The 40-byte frame header of the sparse stream (FORMAT.md §2.1, §9 checks 2–3).
 */
import { HEADER_LEN, SavesetFormatError, type FrameKind } from './types.js';

const KINDS: ReadonlySet<string> = new Set<FrameKind>(['meta', 'data', 'zero', 'stop', 'comp']);

/** Offsets of the two 16-digit fields inside a header. */
const START_AT = 5;
const LENGTH_AT = 22;

function hex16(n: number, what: string): string {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`frame ${what} must be a non-negative safe integer, got ${n}`);
  return n.toString(16).padStart(16, '0');
}

/** The header `kind start length\r\n`: exactly 40 bytes, lower-case hex, zero-padded. */
export function formatHeader(kind: FrameKind, start: number, length: number): Buffer {
  if (!KINDS.has(kind)) throw new RangeError(`unknown frame kind ${JSON.stringify(kind)}`);
  return Buffer.from(`${kind} ${hex16(start, 'start')} ${hex16(length, 'length')}\r\n`, 'latin1');
}

/** Value of one ASCII hex digit (either case), or -1. */
function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

function parseHex16(buf: Buffer, at: number, file: string, offset: number, what: string): number {
  let hi = 0;
  let lo = 0;
  for (let i = 0; i < 16; i++) {
    const d = hexDigit(buf[at + i]!);
    if (d < 0) throw new SavesetFormatError(file, offset + at + i, `bad header: ${what} is not 16 hex digits`);
    if (i < 8) hi = hi * 16 + d;
    else lo = lo * 16 + d;
  }
  // hi·2^32 + lo ≤ 2^53 − 1  ⇔  hi < 2^21 (lo < 2^32 always)
  if (hi >= 0x200000) throw new SavesetFormatError(file, offset + at, `bad header: ${what} exceeds 2^53-1`);
  return hi * 0x1_0000_0000 + lo;
}

/**
 * Parse and strictly validate the first 40 bytes of `buf`, which were read at `offset` of `file`.
 * Throws SavesetFormatError naming the offset of the offending byte.
 */
export function parseHeader(buf: Buffer, file: string, offset: number): { kind: FrameKind; start: number; length: number } {
  if (buf.length < HEADER_LEN) {
    throw new SavesetFormatError(file, offset, `bad header: truncated (${buf.length} of ${HEADER_LEN} bytes)`);
  }
  const kind = buf.toString('latin1', 0, 4);
  if (!KINDS.has(kind)) throw new SavesetFormatError(file, offset, `bad header: unknown frame kind ${JSON.stringify(kind)}`);
  if (buf[4] !== 0x20) throw new SavesetFormatError(file, offset + 4, 'bad header: expected a space after the kind');
  if (buf[21] !== 0x20) throw new SavesetFormatError(file, offset + 21, 'bad header: expected a space after start');
  if (buf[38] !== 0x0d || buf[39] !== 0x0a) throw new SavesetFormatError(file, offset + 38, 'bad header: not terminated by CRLF');
  const start = parseHex16(buf, START_AT, file, offset, 'start');
  const length = parseHex16(buf, LENGTH_AT, file, offset, 'length');
  return { kind: kind as FrameKind, start, length };
}
