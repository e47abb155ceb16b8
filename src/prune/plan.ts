/**
 * What one virtnbdprune run does to a set, decided from names and metadata only: the cut (the
 * oldest point kept), and per disk the file that becomes the new base (the data file of the cut
 * point, replaced in place by a synthetic full and then renamed `<dev>.full.data`), the files
 * merged into it and removed, and the side files of the removed points.
 */
import { readdirSync } from 'node:fs';
import type { BackupDir, ChainFile } from '../chain/discover.js';
import { roleOf } from '../chain/order.js';
import { parseDataFileName } from '../chain/names.js';
import { checkpointSerial, chooseCut, collectPoints, type Point, type Retention } from './points.js';

export interface DiskPlan {
  dev: string;
  /** Data file of the cut point: rewritten in place as a full (`incremental: false`). */
  staging: string;
  /** Final name of the new base: `<dev>.full.data`. */
  final: string;
  /** Files merged into the new base and removed, in a removal order that keeps every chain whole. */
  remove: string[];
}

export interface PrunePlan {
  /** The checkpoint that the new fulls record (undefined: nothing to prune). */
  cut?: string;
  kept: Point[];
  pruned: Point[];
  /** The policy's oldest point was a delta: its checkpoint is kept as well. */
  movedToCheckpoint: boolean;
  disks: DiskPlan[];
  /** Disks left alone (their chain does not reach the cut), with the reason. */
  untouched: { dev: string; reason: string }[];
  /** Side files (vmconfig, qcow.json, boot files, …) of removed points. */
  sideFiles: string[];
}

/** Removal order: non-creating deltas first, then creating deltas and bases, newest checkpoint first. */
export function removalOrder(files: readonly ChainFile[]): ChainFile[] {
  const rank = (f: ChainFile): number => (roleOf(f) === 'noncreating' ? Number.MAX_SAFE_INTEGER : (checkpointSerial(f.metadata.checkpointName) ?? -1));
  return [...files].sort((a, b) => rank(b) - rank(a) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Idents whose side files go with the removed points (checkpoint names and delta idents). */
function removedIdents(files: readonly ChainFile[], cut: string): Set<string> {
  const out = new Set<string>();
  for (const f of files) {
    const role = roleOf(f);
    if (role === 'noncreating') {
      if (f.ident !== undefined) out.add(f.ident);
    } else if (f.level !== 'copy' && f.metadata.checkpointName !== cut) out.add(f.metadata.checkpointName);
  }
  return out;
}

/**
 * Side files of `idents` in `dir`: `vmconfig.<id>.xml`, `<dev>.<id>.qcow.json`, and every other
 * non-data file named `<something>.<id>` (boot files, `osinfo.<id>`, `autostart.<id>`, BitLocker
 * keys). Data files, checksums, `.cpt`, logs and anything in subdirectories are never matched.
 */
export function sideFilesOf(dir: string, idents: ReadonlySet<string>): string[] {
  const out: string[] = [];
  if (idents.size === 0) return out;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (!e.isFile()) continue;
    const n = e.name;
    if (parseDataFileName(n) || n.endsWith('.chksum') || n.endsWith('.cpt') || n.endsWith('.partial') || /\.log$/.test(n)) continue;
    for (const id of idents) {
      if (n === `vmconfig.${id}.xml` || n.endsWith(`.${id}.qcow.json`) || n.endsWith(`.${id}`)) {
        out.push(n);
        break;
      }
    }
  }
  return out.sort();
}

/** Plan a prune of `set` by `policy` at time `now`. */
export function planPrune(set: BackupDir, policy: Retention, now: number): PrunePlan {
  const { points, disks } = collectPoints(set);
  const cut = chooseCut(points, policy, now);
  const empty: PrunePlan = { kept: points, pruned: [], movedToCheckpoint: cut.movedToCheckpoint, disks: [], untouched: [], sideFiles: [] };
  if (cut.index === 0) return empty;
  const cutPoint = points[cut.index];
  const cutName = cutPoint.checkpoint;
  const cutSerial = checkpointSerial(cutName) ?? -1;
  const plans: DiskPlan[] = [];
  const untouched: { dev: string; reason: string }[] = [];
  const removedFiles: ChainFile[] = [];
  for (const d of disks) {
    const at = d.chain.findIndex((f) => roleOf(f) !== 'noncreating' && f.level !== 'copy' && f.metadata.checkpointName === cutName);
    if (at < 0) {
      const base = d.chain[0];
      const why =
        base && base.level !== 'copy' && (checkpointSerial(base.metadata.checkpointName) ?? -1) > cutSerial
          ? `its chain starts after checkpoint [${cutName}]`
          : `it has no backup at checkpoint [${cutName}] (excluded from that run, or only copies)`;
      untouched.push({ dev: d.dev, reason: why });
      continue;
    }
    if (at === 0) continue; // the cut is this disk's base already
    const staging = d.chain[at];
    const remove = removalOrder([...d.chain.slice(0, at), ...d.older]);
    removedFiles.push(...remove);
    plans.push({ dev: d.dev, staging: staging.name, final: `${d.dev}.full.data`, remove: remove.map((f) => f.name) });
  }
  const idents = removedIdents(removedFiles, cutName);
  // Side files still needed by a disk left alone (e.g. excluded from the cut's run) stay.
  for (const u of untouched) {
    const d = disks.find((x) => x.dev === u.dev);
    for (const f of [...(d?.chain ?? []), ...(d?.older ?? [])]) {
      idents.delete(f.metadata.checkpointName);
      if (f.ident !== undefined) idents.delete(f.ident);
    }
  }
  return {
    cut: plans.length > 0 ? cutName : undefined,
    kept: points.slice(cut.index),
    pruned: points.slice(0, cut.index),
    movedToCheckpoint: cut.movedToCheckpoint,
    disks: plans,
    untouched,
    sideFiles: sideFilesOf(set.dir, idents),
  };
}
