/**
 * The traces of a full or copy backup that died before it was complete (SIGKILL, host crash,
 * ENOSPC with a failed clean-up): a chain is committed by `<domain>.cpt` (full) and a copy by
 * having no `*.partial` left, so a target directory without `.cpt` whose data files are
 * - `<dev>.(full|copy).data.partial`, with or without complete `<dev>.<same level>.data` files of
 *   the same run, or
 * - only complete `<dev>.full.data` files (the run died after its data, before `.cpt`)
 * holds no backup point anyone can rely on. A new full/copy/auto run moves these files (with their
 * `.chksum`, the run's side files and `checkpoints/virtnbdbackup.0.xml`) aside as
 * `<name>.failed-<unix time>` — renamed, never deleted — and starts over; an inc/diff run refuses
 * with the command that starts the chain again.
 */
import { basename, dirname, join } from 'node:path';
import type { Logger } from '../log/logger.js';
import { isPartialName, parseDataFileName } from '../chain/names.js';
import { pathExists, publishNoReplace, syncDir } from '../util/atomic-file.js';
import type { TargetState } from './target-dir.js';
import { checkpointNameOf } from './cpt-file.js';

export interface UncommittedRun {
  level: 'full' | 'copy';
  /** Paths to move aside. */
  paths: string[];
}

const FAILED_RE = /\.failed-[0-9]+$/;
const LOG_RE = /^backup\.[a-z]+\.[0-9]{14}\.log$/;

/** The uncommitted full/copy run in `dir`, or undefined when the directory shows none. */
export async function findUncommittedFull(dir: string, domain: string, target: TargetState, checkpointDir: string): Promise<UncommittedRun | undefined> {
  if (target.dataLike.length === 0 || target.names.includes(`${domain}.cpt`)) return undefined;
  const levels = new Set<string>();
  let partials = 0;
  for (const n of target.dataLike) {
    if (FAILED_RE.test(n)) continue;
    const base = isPartialName(n) ? n.slice(0, -'.partial'.length) : n.endsWith('.chksum') ? n.slice(0, -'.chksum'.length) : n;
    const d = parseDataFileName(base);
    if (d === undefined || (d.level !== 'full' && d.level !== 'copy')) return undefined;
    levels.add(d.level);
    if (isPartialName(n)) partials++;
  }
  if (levels.size !== 1) return undefined;
  const level = [...levels][0] as 'full' | 'copy';
  // A copy without partial files is a complete copy backup: not ours to touch.
  if (partials === 0 && level === 'copy') return undefined;
  const ident = level === 'full' ? checkpointNameOf(0) : 'copy';
  const runFiles = target.names.filter(
    (n) =>
      !FAILED_RE.test(n) &&
      !LOG_RE.test(n) &&
      (target.dataLike.includes(n) || n.endsWith(`.${ident}`) || n.includes(`.${ident}.`)),
  );
  const paths = runFiles.map((n) => join(dir, n));
  const xml = join(checkpointDir, `${ident}.xml`);
  if (level === 'full' && (await pathExists(xml))) paths.push(xml);
  return { level, paths };
}

/** Renames every path to `<path>.failed-<unixTime>` (never replacing), one warning each. */
export async function moveAside(run: UncommittedRun, unixTime: number, log: Logger): Promise<void> {
  const dirs = new Set<string>();
  for (const p of run.paths) {
    const to = `${p}.failed-${unixTime}`;
    await publishNoReplace(p, to);
    dirs.add(dirname(to));
    log.warn(`Moved [${p}] of an unfinished ${run.level} backup aside: [${basename(to)}].`);
  }
  for (const d of dirs) await syncDir(d);
}
