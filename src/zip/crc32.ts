/** A running CRC-32 (ZIP / zlib `crc32`) over pieces of data, backed by the `crc-32` package. */
import CRC32 from 'crc-32';

export class Crc32 {
  /** Signed state as the `crc-32` package keeps it (0 = nothing hashed yet). */
  private state = 0;

  update(buf: Uint8Array): void {
    if (buf.length > 0) this.state = CRC32.buf(buf, this.state);
  }

  /** The CRC-32 so far, unsigned. */
  digest(): number {
    return this.state >>> 0;
  }
}
