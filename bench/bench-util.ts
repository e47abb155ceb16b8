/** Small helpers shared by the benchmark scripts: the seeded PRNG (src/devtools/prng.ts), medians, plain-text tables. */

import { createHash } from 'node:crypto';
import { createReadStream, rmSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';

export { prng } from '../src/devtools/prng.js';

/** SHA-256 of a file's bytes, read in 4 MiB pieces. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 4 << 20 })) h.update(c as Buffer);
  return h.digest('hex');
}

/** SHA-256 of an image's guest content (converted to a sparse raw file in `scratch`, hashed, removed). */
export async function contentSha(image: string, scratch: string): Promise<string> {
  const raw = join(scratch, 'check.raw');
  await execa('qemu-img', ['convert', '-O', 'raw', image, raw]);
  try {
    return await sha256File(raw);
  } finally {
    rmSync(raw, { force: true });
  }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Columns padded to their widest cell; the first left-aligned, the others right-aligned. */
export function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : (c ?? '').padStart(w[i]!))).join('  ');
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}
