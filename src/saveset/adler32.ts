/**
 * Adler-32 checksums of data files and the `.chksum` file format (FORMAT.md §5).
 */
import { open } from 'node:fs/promises';
import ADLER32 from 'adler-32';

/** Read size of adler32File(). */
const READ_SIZE = 4 << 20;

/** A running Adler-32 (zlib `adler32`, initial value 1). */
export class Adler32 {
  private state = 1;

  update(buf: Uint8Array): void {
    if (buf.length > 0) this.state = ADLER32.buf(buf, this.state);
  }

  /** The checksum so far, unsigned. */
  digest(): number {
    return this.state >>> 0;
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
