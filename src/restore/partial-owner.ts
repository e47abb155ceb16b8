/**
 * Who writes a restore's `<image>.partial` (src/util/run-owner.ts): a record in
 * `<run state dir>/restore-partials/<hash of the path>.json` while a restore writes it. A restore
 * that finds the partial image of a dead restore (SIGKILL) removes it — and the external data file
 * that restore created — and goes on; a partial whose writer lives, or whose writer is unknown
 * (no record: after a reboot, or another host), is refused with the command that removes it.
 */
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log/logger.js';
import { ownerAlive, readOwnerFile, runStateDir, selfOwner, writeOwnerFile } from '../util/run-owner.js';

function recordPath(partial: string): string {
  return join(runStateDir('restore-partials'), `${createHash('sha256').update(partial).digest('hex').slice(0, 24)}.json`);
}

const q = (s: string): string => (/^[A-Za-z0-9_.,:/=@+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

/** This process writes `partial` (and `dataFile`). */
export async function markPartialOwner(partial: string, dataFile?: string): Promise<void> {
  await writeOwnerFile(recordPath(partial), selfOwner('virtnbdrestore', { partial, ...(dataFile !== undefined ? { dataFile } : {}) }));
}

export function dropPartialOwner(partial: string): void {
  rmSync(recordPath(partial), { force: true });
}

/** Removes `partial` when its writer is dead (true); false when it lives or is unknown. */
export function reclaimDeadPartial(partial: string, log: Logger): boolean {
  const rec = readOwnerFile(recordPath(partial));
  if (rec === undefined || ownerAlive(rec) || rec.partial !== partial) return false;
  rmSync(partial, { force: true });
  if (typeof rec.dataFile === 'string') rmSync(rec.dataFile, { force: true });
  dropPartialOwner(partial);
  log.warn(`Removed [${partial}]${typeof rec.dataFile === 'string' ? ` and [${rec.dataFile}]` : ''} left by virtnbdrestore pid ${rec.pid}, which is no longer running.`);
  return true;
}

/** The refusal for a partial image nobody can be shown to have left behind. */
export function partialExistsMessage(partial: string, live: boolean): string {
  return live
    ? `Partial image [${partial}] is being written by another virtnbdrestore that is still running; wait for it to end.`
    : `Partial image [${partial}] exists: an earlier restore was interrupted (or one runs on another host). If none runs, remove it with: rm -f -- ${q(partial)}`;
}

/** True when a live restore writes `partial`. */
export function partialWriterAlive(partial: string): boolean {
  const rec = readOwnerFile(recordPath(partial));
  return rec !== undefined && ownerAlive(rec);
}
