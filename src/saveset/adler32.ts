/**
 * Adler-32 checksums of data files and the `.chksum` file format (FORMAT.md §5).
 */
import { open } from 'node:fs/promises';
import { FastAdler32 } from './adler32-wasm.js';

/** Read size of adler32File(). */
const READ_SIZE = 4 << 20;

/**
 * A running Adler-32 (zlib `adler32`, initial value 1): the WebAssembly SIMD routine of
 * adler32-wasm.ts (~8 GB/s; the `adler-32` package where SIMD is missing, ~0.5 GB/s, which made
 * the checksum the bottleneck of a backup).
 */
export class Adler32 {
  private readonly impl = new FastAdler32();

  update(buf: Uint8Array): void {
    this.impl.update(buf);
  }

  /** The checksum so far, unsigned. */
  digest(): number {
    return this.impl.digest();
  }
}

/** Adler-32 of a whole file, read sequentially in 4 MiB pieces. */
export async function adler32File(path: string): Promise<number> {
  const fh = await open(path, 'r');
  try {
    const a = new Adler32();
    const buf = Buffer.allocUnsafe(READ_SIZE);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, READ_SIZE, null);
      if (bytesRead === 0) break;
      a.update(buf.subarray(0, bytesRead));
    }
    return a.digest();
  } finally {
    await fh.close();
  }
}

/** The content of a `.chksum` file: unsigned decimal, no leading zeros, no newline. */
export function formatChecksum(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`not an Adler-32 value: ${n}`);
  return String(n);
}

/**
 * The value of a `.chksum` file's content (§9 check 19): decimal digits, optionally followed by
 * whitespace, below 2^32. Anything else (e.g. the original's `None`) → undefined.
 */
export function parseChecksumFile(text: string): number | undefined {
  const m = /^([0-9]+)[ \t\n\r\f\v]*$/.exec(text);
  if (!m) return undefined;
  const digits = m[1]!.replace(/^0+(?=.)/, '');
  if (digits.length > 10) return undefined;
  const n = Number(digits);
  return n <= 0xffffffff ? n : undefined;
}
