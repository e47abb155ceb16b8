/**
 * Which ranges of a disk a backup writes (BEHAVIOUR.md §6.3–6.4).
 *
 * Each meta context is walked on its own over [0, size) (D13: the original assumed both contexts
 * described the same ranges), adjacent entries with equal raw flags are merged (so data and
 * allocated-zero stay apart), and unknown flag values are errors. Then:
 * - copy / full: the allocation list, data (flags 0, 2) as data frames, holes (1, 3) as zero frames;
 * - inc / diff with sparse detection: dirty ∩ allocation, data parts as data frames and — ours,
 *   D1z — no-data parts as zero frames, so a range the guest zeroed or trimmed reads as zero in
 *   every later restore or map;
 * - inc / diff without sparse detection: the dirty ranges as data frames.
 */
import { execa } from 'execa';
import { CONTEXT_BASE_ALLOCATION, type Extent, type NbdClient } from '../nbd/client.js';
import type { BackupLevel } from './types.js';

/** One frame the backup will write: data read from the export, or a zero frame. */
export interface PlannedExtent {
  offset: number;
  length: number;
  data: boolean;
}

export interface ExtentPlan {
  extents: PlannedExtent[];
  /** Sum of the data extents' lengths (the metadata's dataSize). */
  dataSize: number;
  /** Sum of the zero extents' lengths. */
  zeroSize: number;
}

export function dirtyBitmapContext(bitmap: string): string {
  return `qemu:dirty-bitmap:${bitmap}`;
}

/**
 * Source of a context's extents within [offset, offset + length), clipped to the range, adjacent
 * equal flags merged: the built-in client or `nbdinfo --map` (-q).
 */
export type ExtentSource = (context: string, offset: number, length: number) => Promise<Extent[]>;

/** Walks `context` over the range with NBD block status requests. */
export function clientExtentSource(client: NbdClient): ExtentSource {
  return (context, offset, length) => client.blockStatusAll(context, offset, length);
}

/** The part of `list` inside [offset, offset + length), clipped. */
export function clipExtents(list: readonly Extent[], offset: number, length: number): Extent[] {
  const end = offset + length;
  const out: Extent[] = [];
  for (const e of list) {
    const s = Math.max(e.offset, offset);
    const t = Math.min(e.offset + e.length, end);
    if (s < t) out.push({ offset: s, length: t - s, flags: e.flags });
  }
  return out;
}

interface NbdinfoEntry {
  offset: number;
  length: number;
  type: number;
}

/** `-q/--qemu`: the extents as `nbdinfo --json --map=<context> <uri>` reports them. */
export function nbdinfoExtentSource(uri: string): ExtentSource {
  const cache = new Map<string, Promise<Extent[]>>();
  return (context, offset, length) => {
    let whole = cache.get(context);
    if (whole === undefined) {
      whole = nbdinfoMap(uri, context);
      cache.set(context, whole);
    }
    return whole.then((list) => clipExtents(list, offset, length));
  };
}

async function nbdinfoMap(uri: string, context: string): Promise<Extent[]> {
  {
    const { stdout } = await execa('nbdinfo', ['--json', `--map=${context}`, uri]);
    let parsed: unknown;
    try {
      parsed = JSON.parse(stdout);
    } catch (e) {
      throw new Error(`nbdinfo --map=${context} printed no valid JSON: ${(e as Error).message}`);
    }
    if (!Array.isArray(parsed)) throw new Error(`nbdinfo --map=${context}: expected a JSON array`);
    const out: Extent[] = [];
    for (const raw of parsed as unknown[]) {
      const e = raw as Partial<NbdinfoEntry>;
      if (!Number.isSafeInteger(e.offset) || !Number.isSafeInteger(e.length) || !Number.isSafeInteger(e.type)) {
        throw new Error(`nbdinfo --map=${context}: malformed entry ${JSON.stringify(raw)}`);
      }
      const last = out[out.length - 1];
      if (last !== undefined && last.flags === e.type && last.offset + last.length === e.offset) last.length += e.length!;
      else out.push({ offset: e.offset!, length: e.length!, flags: e.type! });
    }
    return out;
  }
}

/** Checks that `list` tiles [0, size) exactly and uses only `allowed` flag values. */
export function checkTiling(list: readonly Extent[], size: number, context: string, allowed: readonly number[]): void {
  let pos = 0;
  for (const e of list) {
    if (e.offset !== pos || e.length <= 0) {
      throw new Error(`${context}: extents do not tile the disk (expected offset ${pos}, got ${e.offset}+${e.length})`);
    }
    if (!allowed.includes(e.flags)) throw new Error(`${context}: unexpected extent flags ${e.flags} at offset ${e.offset}`);
    pos += e.length;
  }
  if (pos !== size) throw new Error(`${context}: extents cover ${pos} bytes of a ${size}-byte disk`);
}

const isData = (allocFlags: number): boolean => (allocFlags & 1) === 0;

function summarize(extents: PlannedExtent[]): ExtentPlan {
  let dataSize = 0;
  let zeroSize = 0;
  for (const e of extents) {
    if (e.data) dataSize += e.length;
    else zeroSize += e.length;
  }
  return { extents, dataSize, zeroSize };
}

/** copy / full: the allocation list as frames. */
export function fullPlan(alloc: readonly Extent[]): ExtentPlan {
  return summarize(alloc.map((e) => ({ offset: e.offset, length: e.length, data: isData(e.flags) })));
}

/**
 * inc / diff: the dirty ranges; with `alloc` (sparse detection) split by allocation, no-data parts
 * as zero frames (D1z); without it every dirty range is a data frame.
 */
export function deltaPlan(dirty: readonly Extent[], alloc: readonly Extent[] | undefined): ExtentPlan {
  const changed = dirty.filter((e) => e.flags === 1);
  if (alloc === undefined) return summarize(changed.map((e) => ({ offset: e.offset, length: e.length, data: true })));
  const out: PlannedExtent[] = [];
  let i = 0;
  let j = 0;
  while (i < changed.length && j < alloc.length) {
    const c = changed[i]!;
    const a = alloc[j]!;
    const cEnd = c.offset + c.length;
    const aEnd = a.offset + a.length;
    const start = Math.max(c.offset, a.offset);
    const end = Math.min(cEnd, aEnd);
    if (start < end) out.push({ offset: start, length: end - start, data: isData(a.flags) });
    if (cEnd <= aEnd) i++;
    if (aEnd <= cEnd) j++;
  }
  return summarize(out);
}

export interface PlanOptions {
  level: BackupLevel;
  /** Size of the export. */
  size: number;
  /** Dirty bitmap name for inc/diff (online: `backup-<dev>`, offline: the parent checkpoint). */
  bitmap?: string;
  /** --no-sparse-detection (inc/diff only). */
  noSparseDetection: boolean;
}

/**
 * The frames of one disk's backup, from the export's meta contexts. For inc/diff the allocation
 * is queried only inside the dirty ranges (P4: cost grows with the changes, not the disk size).
 */
export async function planExtents(source: ExtentSource, opts: PlanOptions): Promise<ExtentPlan> {
  const delta = (opts.level === 'inc' || opts.level === 'diff') && opts.bitmap !== undefined;
  if (!delta) {
    const alloc = await source(CONTEXT_BASE_ALLOCATION, 0, opts.size);
    checkTiling(alloc, opts.size, CONTEXT_BASE_ALLOCATION, [0, 1, 2, 3]);
    return fullPlan(alloc);
  }
  const ctx = dirtyBitmapContext(opts.bitmap!);
  const dirty = await source(ctx, 0, opts.size);
  checkTiling(dirty, opts.size, ctx, [0, 1]);
  if (opts.noSparseDetection) return deltaPlan(dirty, undefined);
  const alloc: Extent[] = [];
  for (const d of dirty) {
    if (d.flags !== 1) continue;
    const part = await source(CONTEXT_BASE_ALLOCATION, d.offset, d.length);
    let pos = d.offset;
    for (const e of part) {
      if (e.offset !== pos || ![0, 1, 2, 3].includes(e.flags)) {
        throw new Error(`${CONTEXT_BASE_ALLOCATION}: unexpected extent ${e.offset}+${e.length} flags ${e.flags} inside the dirty range at ${d.offset}`);
      }
      pos += e.length;
      alloc.push(e);
    }
    if (pos !== d.offset + d.length) throw new Error(`${CONTEXT_BASE_ALLOCATION}: dirty range ${d.offset}+${d.length} only described up to ${pos}`);
  }
  return deltaPlan(dirty, alloc);
}
