/** Writing hand-made frames into a saveset while tracking the disk they describe, and damaging files on purpose. */
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import type { SavesetWriter } from '../../src/saveset/writer.js';

/** A data frame (`data`) or a zero frame (`zero` bytes) at guest offset `start`. */
export interface EditFrame {
  start: number;
  data?: Buffer;
  zero?: number;
}

/** Write `frames` with `w` (then finish it) and apply the same frames to `model`, the disk's reference contents. */
export async function writeFrames(w: SavesetWriter, frames: readonly EditFrame[], model: Buffer): Promise<void> {
  for (const f of frames) {
    if (f.data) {
      await w.data(f.start, f.data);
      f.data.copy(model, f.start);
    } else {
      await w.zero(f.start, f.zero!);
      model.fill(0, f.start, f.start + f.zero!);
    }
  }
  await w.finish();
}

/** XOR one byte of a file at `offset` with 0x5a, in place. */
export function flipByte(path: string, offset: number): void {
  const fd = openSync(path, 'r+');
  try {
    const b = Buffer.alloc(1);
    if (readSync(fd, b, 0, 1, offset) !== 1) throw new Error(`flipByte: ${path} has no byte at ${offset}`);
    b[0] ^= 0x5a;
    writeSync(fd, b, 0, 1, offset);
  } finally {
    closeSync(fd);
  }
}
