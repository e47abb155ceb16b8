/**
 * What the target directory holds, and the level rules that depend on it (BEHAVIOUR.md §2.6,
 * §2.7, CLI.md §2.2): `auto` resolution, "no full backup found", "already contains a backup".
 * One directory listing per run.
 */
import { readdir } from 'node:fs/promises';
import { isPartialName, parseDataFileName } from '../chain/names.js';
import type { BackupLevel, RequestedLevel } from './types.js';
import { join } from 'node:path';
import { assertNoSymlink } from '../util/safe-path.js';

export interface TargetState {
  /** Every name in the directory (empty when it does not exist). */
  names: string[];
  /** Names matching `*.data*` (counts `.data.partial` and `.data.chksum`, §2.6). */
  dataLike: string[];
  hasFull: boolean;
  partials: string[];
}

export async function inspectTarget(dir: string): Promise<TargetState> {
  let names: string[] = [];
  try {
    names = (await readdir(dir)).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  // The checkpoint XML is written into `checkpoints/`: never into a planted link to elsewhere (src/util/safe-path.ts).
  if (names.includes('checkpoints')) {
    try {
      assertNoSymlink(join(dir, 'checkpoints'));
    } catch (e) {
      throw new BackupFatal(`${(e as Error).message}: the checkpoint directory of [${dir}] must be a real directory.`);
    }
  }
  // Files a recovery moved aside (`<name>.failed-<unix time>`, §3.9) belong to no backup.
  const dataLike = names.filter((n) => n.includes('.data') && !/\.failed-[0-9]+$/.test(n));
  const hasFull = names.some((n) => parseDataFileName(n)?.level === 'full');
  const partials = names.filter((n) => isPartialName(n));
  return { names, dataLike, hasFull, partials };
}

/** A fatal condition with the user-facing message (logged as ERROR, exit 1). */
export class BackupFatal extends Error {
  constructor(message: string, readonly extraLines: string[] = []) {
    super(message);
    this.name = 'BackupFatal';
  }
}

export interface AutoResult {
  level: BackupLevel;
  /** INFO line to log. */
  message?: string;
}

/** §2.6 (ours, D7: resolved before every level-dependent check). */
export function resolveAuto(requested: RequestedLevel, target: TargetState, dir: string): AutoResult {
  if (requested !== 'auto') return { level: requested };
  if (target.dataLike.length === 0) return { level: 'full', message: 'Backup mode auto, target folder is empty: executing full backup.' };
  if (target.hasFull) return { level: 'inc', message: 'Backup mode auto: executing incremental backup.' };
  throw new BackupFatal(`Can't execute switch to auto incremental backup: specified target folder [${dir}] does not contain full backup.`);
}

/** §2.7 rules for directory mode (zip mode checks the current directory the same way). */
export function checkTargetRules(level: BackupLevel, target: TargetState, dir: string, opts: { startOnly: boolean; killOnly: boolean }): void {
  if ((level === 'inc' || level === 'diff') && !target.hasFull) {
    throw new BackupFatal(`Unable to execute [${level}] backup: No full backup found in target directory: [${dir}]`);
  }
  if ((level === 'copy' || level === 'full') && !opts.startOnly && !opts.killOnly && target.dataLike.length > 0) {
    throw new BackupFatal('Target directory already contains full or copy backup.');
  }
}

/** CLI.md §2.2 (rows 1–4; row 5 is checked with the resolved level). */
export function rejectCombinations(o: { compress: false | number; type: 'stream' | 'raw'; zip: boolean; raw: boolean; level: RequestedLevel }): string | undefined {
  if (o.compress !== false && o.type === 'raw') return 'Compression not supported with raw output.';
  if (o.zip && o.type === 'raw') return 'Output type raw not supported to stdout.';
  if (o.zip && o.raw) return 'Saving raw images to stdout is not supported.';
  if (o.type === 'raw' && (o.level === 'inc' || o.level === 'diff')) return 'Stream format raw does not support incremental or differential backup.';
  return undefined;
}
