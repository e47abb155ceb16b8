/**
 * The resolved view of a backup chain: for every byte of the virtual disk, where it comes from.
 * Built by resolve.ts from SavesetIndex objects; consumed by the plugin table encoder, restore and
 * verify. Immutable once built.
 */

export enum ExtentKind {
  /** Reads as zeros (zero frame, or not covered by any file). */
  Zero = 0,
  /** Uncompressed payload bytes in a file. */
  Raw = 1,
  /** A slice of one decoded LZ4 frame. */
  Lz4 = 2,
}

export interface MapExtent {
  /** Guest offset of the first byte. */
  start: number;
  length: number;
  kind: ExtentKind;
  /** Index into ExtentMap.files (0 for Zero extents). */
  file: number;
  /** Raw: file offset of the byte at `start`. Lz4: file offset of the LZ4 frame. Zero: 0. */
  fileOffset: number;
  /** Lz4: compressed size of the LZ4 frame. Otherwise 0. */
  csize: number;
  /** Lz4: decoded size of the LZ4 frame. Otherwise 0. */
  usize: number;
  /** Lz4: offset inside the decoded frame of the byte at `start`. Otherwise 0. */
  sliceOffset: number;
}

export interface ExtentMap {
  /** Export size: virtualSize of the newest file of the chain. */
  readonly size: number;
  /** Absolute paths of the chain's files, oldest first. */
  readonly files: readonly string[];
  /** Sorted, non-overlapping, contiguous, covering [0, size) exactly (adjacent zeros merged). */
  readonly extents: readonly MapExtent[];
}

/** Index of the extent containing `offset` (binary search); -1 when outside [0, size). */
export function findExtent(map: ExtentMap, offset: number): number {
  const ex = map.extents;
  if (offset < 0 || offset >= map.size || ex.length === 0) return -1;
  let lo = 0;
  let hi = ex.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (ex[mid].start <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Bytes of the map backed by data (Raw or Lz4). */
export function dataBytes(map: ExtentMap): number {
  let n = 0;
  for (const e of map.extents) if (e.kind !== ExtentKind.Zero) n += e.length;
  return n;
}
