/** Positioned reads of data files that either return every byte asked for or name file and offset. */
import type { FileHandle } from 'node:fs/promises';
import { SavesetFormatError } from './types.js';

/** Reads exactly buf.length bytes at `pos`, or fails naming the file and offset. */
export async function readFully(fh: FileHandle, file: string, buf: Buffer, pos: number): Promise<void> {
  let got = 0;
  while (got < buf.length) {
    const { bytesRead } = await fh.read(buf, got, buf.length - got, pos + got);
    if (bytesRead === 0) throw new SavesetFormatError(file, pos + got, `unexpected end of file (${buf.length - got} bytes missing)`);
    got += bytesRead;
  }
}
