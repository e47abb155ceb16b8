/**
 * The backup points of a set, oldest first, as virtnbdprune counts them (README "Retention"):
 * every checkpoint reached by the newest chain (the base's, then each creating incremental's) and
 * every non-creating delta (differential, offline incremental) attached to one of them. Points are
 * collected over all disks and matched by checkpoint, not by file name: a non-creating delta is
 * identified as "the k-th delta attached to checkpoint c", because the original writer takes a
 * separate Unix-time ident for each disk of one diff run (FORMAT.md §6.1).
 *
 * Read from names and metadata only (no payloads); the chain rules are those of src/chain.
 */
import { selectChain, roleOf } from '../chain/order.js';
import type { ChainFile } from '../chain/discover.js';
import type { BackupDir } from '../chain/discover.js';

export type PointKind = 'checkpoint' | 'delta';

export interface Point {
  /** Internal key: the checkpoint name, or `<parent checkpoint>+<k>` for the k-th attached delta. */
  key: string;
  kind: PointKind;
  /** What a user passes to --until: the checkpoint name, or the delta's ident (of the first disk). */
  label: string;
  /** The checkpoint this point is (checkpoint) or hangs off (delta). */
  checkpoint: string;
  /** Metadata `date` of the point's file (naive local time), "" when unknown. */
  date: string;
  /** The point's data file per disk. */
  files: Map<string, ChainFile>;
}

export interface DiskChain {
  dev: string;
  /** The newest point's chain of this disk, base first (src/chain selectChain). */
  chain: ChainFile[];
  /** Data files of this disk that are not in `chain` (chains before a fallback full). */
  older: ChainFile[];
}

export interface SetPoints {
  /** Oldest first. */
  points: Point[];
  disks: DiskChain[];
}

/** The number at the end of a checkpoint name (`virtnbdbackup.7`, `<chain>.7`); undefined when none. */
export function checkpointSerial(name: string): number | undefined {
  const m = /\.([0-9]+)$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** Sort key of a point: checkpoint serial, then 0 for the checkpoint itself or k+1 for its k-th delta. */
function orderOf(p: Point): [number, number] {
  const serial = checkpointSerial(p.checkpoint) ?? -1;
  if (p.kind === 'checkpoint') return [serial, 0];
  return [serial, Number(p.key.slice(p.key.lastIndexOf('+') + 1)) + 1];
}

/** Collect the points of every disk of `set` (disks whose chain is only a copy have none). */
export function collectPoints(set: BackupDir): SetPoints {
  const byKey = new Map<string, Point>();
  const disks: DiskChain[] = [];
  for (const dev of [...set.disks.keys()].sort()) {
    const files = set.disks.get(dev) ?? [];
    const chain = selectChain(dev, files).files;
    const inChain = new Set(chain.map((f) => f.name));
    disks.push({ dev, chain, older: files.filter((f) => !inChain.has(f.name)) });
    let current: string | undefined;
    let attached = 0;
    for (const f of chain) {
      const role = roleOf(f);
      if (role === 'base' && f.level === 'copy') {
        current = undefined;
        continue;
      }
      if (role !== 'noncreating') {
        current = f.metadata.checkpointName;
        attached = 0;
        add(byKey, { key: current, kind: 'checkpoint', label: current, checkpoint: current, date: f.metadata.date, files: new Map() }, dev, f);
        continue;
      }
      if (current === undefined) continue;
      const key = `${current}+${attached++}`;
      add(byKey, { key, kind: 'delta', label: f.ident ?? f.name, checkpoint: current, date: f.metadata.date, files: new Map() }, dev, f);
    }
  }
  const points = [...byKey.values()].sort((a, b) => {
    const [x1, y1] = orderOf(a);
    const [x2, y2] = orderOf(b);
    return x1 - x2 || y1 - y2;
  });
  return { points, disks };
}

function add(byKey: Map<string, Point>, fresh: Point, dev: string, f: ChainFile): void {
  const p = byKey.get(fresh.key) ?? fresh;
  byKey.set(fresh.key, p);
  p.files.set(dev, f);
}

/** Retention policy: a point is kept when it is one of the newest `keepLast`, or not older than `keepWithinMs`. */
export interface Retention {
  keepLast?: number;
  keepWithinMs?: number;
}

/** Milliseconds since the epoch of a metadata date (naive local ISO-8601); NaN when unparsable. */
export function pointTime(date: string): number {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$/.exec(date);
  if (!m) return Number.NaN;
  const ms = m[7] ? Math.floor(Number(m[7].padEnd(6, '0')) / 1000) : 0;
  return new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]), ms).getTime();
}

export interface Cut {
  /** Index (in `points`) of the oldest point kept; 0 = nothing to prune. */
  index: number;
  /** True when the policy's oldest point was a delta and the cut moved back to its checkpoint. */
  movedToCheckpoint: boolean;
}

/**
 * The oldest point to keep. A delta cannot become a base for the points after it (the next
 * incremental continues from the delta's checkpoint, not from the delta), so when the policy's
 * oldest point is a delta, its checkpoint is kept too.
 */
export function chooseCut(points: readonly Point[], policy: Retention, now: number): Cut {
  const n = points.length;
  let oldest = n;
  if (policy.keepLast !== undefined) oldest = Math.min(oldest, Math.max(0, n - policy.keepLast));
  if (policy.keepWithinMs !== undefined) {
    for (let i = 0; i < n; i++) {
      const t = pointTime(points[i].date);
      // A point without a usable date is kept (never delete what cannot be dated).
      if (Number.isNaN(t) || t >= now - policy.keepWithinMs) {
        oldest = Math.min(oldest, i);
        break;
      }
    }
  }
  if (oldest >= n) oldest = n - 1; // always keep the newest point
  if (oldest <= 0) return { index: 0, movedToCheckpoint: false };
  let index = oldest;
  let moved = false;
  while (index > 0 && points[index].kind === 'delta') {
    index--;
    moved = true;
  }
  return { index, movedToCheckpoint: moved };
}

/** Parse a duration such as `30d`, `12h`, `2w`, `90m`, `45s`, `1y` (365 days) into milliseconds. */
export function parseDuration(text: string): number | undefined {
  // Hand-written: one regular expression and a table; a dependency would be larger than this.
  const m = /^([0-9]+)\s*(s|m|h|d|w|y)$/.exec(text.trim());
  if (!m) return undefined;
  const unit: Record<string, number> = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3, y: 365 * 86400e3 };
  const v = Number(m[1]) * unit[m[2]];
  return Number.isSafeInteger(v) ? v : undefined;
}
