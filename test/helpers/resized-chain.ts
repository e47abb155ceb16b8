/**
 * A synthetic backup set of a disk resized along its chain (issue 4), written with our writer
 * (src/devtools/image-chain.ts) from raw images, with the raw image and SHA-256 of every point:
 *
 *   0 full  8 MiB          data at [0,1M) [3M,3.5M) [7M,8M)
 *   1 inc  12 MiB (grown)  [0,256K) rewritten, new data at [9M,10M); the rest of the new area untouched
 *   2 inc   6 MiB + 4608 (shrunk, not cluster aligned)  [3M,3M+64K) zeroed, data across the new end
 *   3 inc  10 MiB (grown)  new data at [8M,8M+128K); [6M+4608,10M) otherwise untouched
 *   4 inc  10 MiB          [1M,1M+64K) rewritten
 *
 * The grown areas an inc does not mention are described relative to the previous image extended
 * with zeros, as qemu's dirty bitmap does (it grows clean): point 3 therefore only reads zeros at
 * [7M,8M) and [9M,10M) because the resolver drops data beyond the smaller size of point 2.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, readFileSync, truncateSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { writeImageFile } from '../../src/devtools/image-chain.js';
import { prng } from '../../src/devtools/prng.js';

const KiB = 1024;
const MiB = 1024 * KiB;

export interface ResizedPoint {
  checkpoint: string;
  size: number;
  /** Raw image of the disk at this point. */
  image: string;
  sha: string;
  /** Data file name of this point. */
  file: string;
}

export const RESIZED_SIZES = [8 * MiB, 12 * MiB, 6 * MiB + 4608, 10 * MiB, 10 * MiB];

function fill(image: string, start: number, length: number, seed: number | 'zero'): void {
  const b = Buffer.alloc(length);
  if (seed !== 'zero') {
    const r = prng(seed);
    // half incompressible, half a repeated pattern (LZ4 has something to do)
    for (let i = 0; i < length; i++) b[i] = i < length / 2 ? 1 + Math.floor(r() * 255) : 1 + (i % 251);
  }
  const fd = openSync(image, 'r+');
  try {
    writeSync(fd, b, 0, length, start);
  } finally {
    closeSync(fd);
  }
}

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Raw images of the 5 points under `work` (created once per `work`). */
export function resizedImages(work: string): { images: string[]; shas: string[] } {
  const images = RESIZED_SIZES.map((_, i) => join(work, `point${i}.raw`));
  const [p0, p1, p2, p3, p4] = images as [string, string, string, string, string];
  writeFileSync(p0, '');
  truncateSync(p0, RESIZED_SIZES[0]);
  fill(p0, 0, 1 * MiB, 1);
  fill(p0, 3 * MiB, 512 * KiB, 2);
  fill(p0, 7 * MiB, 1 * MiB, 3);

  copyFileSync(p0, p1);
  truncateSync(p1, RESIZED_SIZES[1]);
  fill(p1, 0, 256 * KiB, 4);
  fill(p1, 9 * MiB, 1 * MiB, 5);

  copyFileSync(p1, p2);
  truncateSync(p2, RESIZED_SIZES[2]);
  fill(p2, 3 * MiB, 64 * KiB, 'zero');
  fill(p2, 5 * MiB + 512 * KiB, RESIZED_SIZES[2]! - (5 * MiB + 512 * KiB), 6);

  copyFileSync(p2, p3);
  truncateSync(p3, RESIZED_SIZES[3]);
  fill(p3, 8 * MiB, 128 * KiB, 7);

  copyFileSync(p3, p4);
  fill(p4, 1 * MiB, 64 * KiB, 8);
  return { images, shas: images.map((p) => sha256(readFileSync(p))) };
}

/**
 * Writes the chain of disk `dev` into `dir` (`compress`: LZ4 level or false) from the images of
 * resizedImages(work); returns the points.
 */
export async function writeResizedSet(dir: string, work: string, dev: string, compress: false | number): Promise<ResizedPoint[]> {
  const { images, shas } = resizedImages(work);
  const points: ResizedPoint[] = [];
  for (let i = 0; i < images.length; i++) {
    const checkpoint = `virtnbdbackup.${i}`;
    const file = i === 0 ? `${dev}.full.data` : `${dev}.inc.${checkpoint}.data`;
    let previous: string | undefined;
    if (i > 0) {
      // the previous image, extended with zeros to this size when the disk grew (a clean bitmap)
      previous = join(work, `prev-${i}.raw`);
      copyFileSync(images[i - 1]!, previous);
      if (RESIZED_SIZES[i]! > RESIZED_SIZES[i - 1]!) truncateSync(previous, RESIZED_SIZES[i]);
    }
    await writeImageFile({
      image: images[i]!,
      previous,
      out: join(dir, file),
      dev,
      level: i === 0 ? 'full' : 'inc',
      checkpointName: checkpoint,
      parentCheckpoint: i === 0 ? '' : `virtnbdbackup.${i - 1}`,
      compress,
    });
    points.push({ checkpoint, size: RESIZED_SIZES[i]!, image: images[i]!, sha: shas[i]!, file });
  }
  return points;
}
