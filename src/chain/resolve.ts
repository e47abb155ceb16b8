/**
 * Resolve an ordered chain of saveset indexes (oldest first) into one ExtentMap: for every byte of
 * the newest virtual disk, the newest file whose data or zero frame covers it (BEHAVIOUR.md §11.2,
 * §12.2). Zero frames of later files hide older data. Ranges that no file covers read as zeros.
 *
 * Cost: the files are overlaid newest first; each older file is merged against the ranges already
 * covered with one two-pointer sweep, so the work is O(files × extents) and reads no payloads.
 */
import type { SavesetIndex, ExtentFrame } from '../saveset/types.js';
import { ExtentKind, type ExtentMap, type MapExtent } from './extent-map.js';

/** The map extents one frame contributes, clipped to [0, limit). */
function frameExtents(frame: ExtentFrame, file: number, limit: number, out: MapExtent[]): void {
  const frameEnd = Math.min(frame.start + frame.length, limit);
  if (frame.start >= frameEnd) return;
  if (frame.kind === 'zero') {
    out.push(extent(frame.start, frameEnd - frame.start, ExtentKind.Zero, 0, 0, 0, 0, 0));
    return;
  }
  if (!frame.chunks) {
    out.push(extent(frame.start, frameEnd - frame.start, ExtentKind.Raw, file, frame.payloadOffset, 0, 0, 0));
    return;
  }
  let at = frame.start;
  for (const c of frame.chunks) {
    const end = Math.min(at + c.usize, frameEnd);
    if (at < end) out.push(extent(at, end - at, ExtentKind.Lz4, file, c.offset, c.csize, c.usize, 0));
    at += c.usize;
    if (at >= frameEnd) break;
  }
}

function extent(
  start: number,
  length: number,
  kind: ExtentKind,
  file: number,
  fileOffset: number,
  csize: number,
  usize: number,
  sliceOffset: number,
): MapExtent {
  return { start, length, kind, file, fileOffset, csize, usize, sliceOffset };
}

/** The part [from, to) of extent e, with file/slice offsets moved along. */
function slice(e: MapExtent, from: number, to: number): MapExtent {
  const delta = from - e.start;
  if (delta === 0 && to === e.start + e.length) return e;
  return {
    ...e,
    start: from,
    length: to - from,
    fileOffset: e.kind === ExtentKind.Raw ? e.fileOffset + delta : e.fileOffset,
    sliceOffset: e.kind === ExtentKind.Lz4 ? e.sliceOffset + delta : 0,
  };
}

/** `older` minus everything `covered` covers; both sorted and internally non-overlapping. */
function uncovered(covered: readonly MapExtent[], older: readonly MapExtent[]): MapExtent[] {
  const out: MapExtent[] = [];
  let j = 0;
  for (const p of older) {
    const end = p.start + p.length;
    while (j < covered.length && covered[j].start + covered[j].length <= p.start) j++;
    let cur = p.start;
    for (let k = j; cur < end && k < covered.length && covered[k].start < end; k++) {
      const c = covered[k];
      if (c.start > cur) out.push(slice(p, cur, c.start));
      cur = Math.max(cur, c.start + c.length);
    }
    if (cur < end) out.push(slice(p, cur, end));
  }
  return out;
}

/** Merge two sorted lists of extents that do not overlap each other. */
function mergeSorted(a: readonly MapExtent[], b: readonly MapExtent[]): MapExtent[] {
  const out: MapExtent[] = new Array(a.length + b.length);
  let i = 0;
  let j = 0;
  let n = 0;
  while (i < a.length && j < b.length) out[n++] = a[i].start <= b[j].start ? a[i++] : b[j++];
  while (i < a.length) out[n++] = a[i++];
  while (j < b.length) out[n++] = b[j++];
  return out;
}

/** Fill the gaps of [0, size) with zero extents and merge neighbouring zero extents. */
function tile(covered: readonly MapExtent[], size: number): MapExtent[] {
  const out: MapExtent[] = [];
  let at = 0;
  const push = (e: MapExtent): void => {
    const last = out[out.length - 1];
    if (last && last.kind === ExtentKind.Zero && e.kind === ExtentKind.Zero) {
      out[out.length - 1] = { ...last, length: last.length + e.length };
    } else {
      out.push(e);
    }
  };
  for (const e of covered) {
    if (e.start > at) push(extent(at, e.start - at, ExtentKind.Zero, 0, 0, 0, 0, 0));
    push(e);
    at = e.start + e.length;
  }
  if (at < size) push(extent(at, size - at, ExtentKind.Zero, 0, 0, 0, 0, 0));
  return out;
}

/**
 * Resolve `chain` (oldest first, base first) into an ExtentMap. The export size is the newest
 * file's virtualSize; a range beyond the virtualSize of any later file is discarded, so a shrink
 * followed by a grow never resurrects old data (BEHAVIOUR.md §11.5).
 */
export function resolveChain(chain: readonly SavesetIndex[]): ExtentMap {
  if (chain.length === 0) throw new Error('resolveChain: empty chain');
  const size = chain[chain.length - 1].metadata.virtualSize;
  let covered: MapExtent[] = [];
  let limit = Number.MAX_SAFE_INTEGER;
  for (let i = chain.length - 1; i >= 0; i--) {
    limit = Math.min(limit, chain[i].metadata.virtualSize);
    const mine: MapExtent[] = [];
    for (const f of chain[i].frames) frameExtents(f, i, limit, mine);
    covered = i === chain.length - 1 ? mine : mergeSorted(covered, uncovered(covered, mine));
  }
  return { size, files: chain.map((c) => c.path), extents: tile(covered, size) };
}
