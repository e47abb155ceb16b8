/**
 * Synthetic disk contents for the benchmarks (map-read, restore): a full with alternating holes and
 * data extents, incrementals rewriting and zeroing small random ranges; bytes are incompressible
 * or LZ4-compressible per 64 KiB, never all zeros, reproducible from their seeds.
 */
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { prng } from '../src/devtools/prng.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** One write to an image: random/pattern bytes, or zeros. */
export interface Piece {
  start: number;
  length: number;
  zero: boolean;
  seed: number;
}

const POOL_SIZE = 16 * MiB;
let pool: Buffer | undefined;
function randomPool(): Buffer {
  if (pool) return pool;
  const r = prng(0xc0ffee);
  const words = new Uint32Array(POOL_SIZE / 4);
  for (let i = 0; i < words.length; i++) words[i] = (r() * 4294967296) >>> 0;
  return (pool = Buffer.from(words.buffer));
}

/**
 * The bytes of a piece: per 64 KiB, either incompressible bytes from the random pool or a
 * 256 B–4 KiB random snippet repeated (compressible by LZ4, never all zeros).
 */
export function pieceBytes(p: Piece): Buffer {
  if (p.zero) return Buffer.alloc(p.length);
  const src = randomPool();
  const out = Buffer.allocUnsafe(p.length);
  const r = prng(p.seed);
  for (let o = 0; o < p.length; o += 64 * KiB) {
    const n = Math.min(64 * KiB, p.length - o);
    const from = Math.floor(r() * (POOL_SIZE - 64 * KiB));
    if (r() < 0.5) src.copy(out, o, from, from + n);
    else out.fill(src.subarray(from, from + 256 + Math.floor(r() * 3840)), o, o + n);
  }
  return out;
}

/** Full: alternating holes and data extents of 64 KiB–8 MiB (4 KiB aligned), ~50% data. */
export function fullPieces(size: number, seed: number): Piece[] {
  const r = prng(seed);
  const ext = (): number => (16 + Math.floor(r() * (2048 - 16 + 1))) * 4 * KiB;
  const out: Piece[] = [];
  let pos = ext();
  while (pos < size) {
    const len = Math.min(ext(), size - pos);
    out.push({ start: pos, length: len, zero: false, seed: Math.floor(r() * 2 ** 31) });
    pos += len + ext();
  }
  return out;
}

/** One incremental: `share` of the disk (default 2 %) in random 4–512 KiB places, 80% rewritten, 20% zeroed. */
export function incPieces(size: number, seed: number, share = 0.02): Piece[] {
  const r = prng(seed);
  const out: Piece[] = [];
  let total = 0;
  while (total < size * share) {
    const len = (1 + Math.floor(r() * 128)) * 4 * KiB;
    const start = Math.floor(r() * ((size - len) / (4 * KiB))) * 4 * KiB;
    out.push({ start, length: len, zero: r() < 0.2, seed: Math.floor(r() * 2 ** 31) });
    total += len;
  }
  return out;
}

export function applyPieces(image: string, pieces: Piece[]): void {
  const fd = openSync(image, 'r+');
  try {
    for (const p of pieces) {
      const b = pieceBytes(p);
      let done = 0;
      while (done < b.length) done += writeSync(fd, b, done, b.length - done, p.start + done);
    }
  } finally {
    closeSync(fd);
  }
}

export function createImage(image: string, size: number, pieces: Piece[]): void {
  const fd = openSync(image, 'w');
  ftruncateSync(fd, size); // sparse: holes where the full has none
  closeSync(fd);
  applyPieces(image, pieces);
}

