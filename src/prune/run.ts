/**
 * virtnbdprune: keep the newest points of a backup set and merge the older ones into a synthetic
 * full, without libvirt and without touching the VM (README "Retention").
 *
 * `.cpt` and `checkpoints/` are left as they are: libvirt still holds every checkpoint (the VM is
 * not touched), the next incremental continues from the last `.cpt` entry, and the original
 * names the next checkpoint after the length of that list (BEHAVIOUR.md §3.3) — shortening it
 * would make the next run reuse a name libvirt still has. The checkpoint XMLs stay because
 * redefining a kept checkpoint (transient domains, §3.6) needs its parents defined first.
 */
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { discoverBackupDir } from '../chain/index.js';
import { lockTarget, TargetBusyError, type TargetLock } from '../backup/target-lock.js';
import { faultPoint } from '../util/fault-point.js';
import type { Logger } from '../log/logger.js';
import { planPrune, type PrunePlan } from './plan.js';
import { readJournal, writeJournal, JOURNAL_NAME, type Journal } from './journal.js';
import { executeJournal, type ExecuteStats } from './execute.js';
import type { Retention } from './points.js';

export interface PruneOptions {
  input: string;
  keepLast?: number;
  keepWithinMs?: number;
  dryRun: boolean;
  json: boolean;
  /** "Now" for --keep-within (tests). */
  now?: number;
}

export interface PruneSummary {
  input: string;
  dryRun: boolean;
  /** An interrupted prune was finished first. */
  resumed?: string;
  cut?: string;
  kept: string[];
  pruned: string[];
  movedToCheckpoint: boolean;
  disks: { dev: string; newBase: string; merged: string[] }[];
  untouched: { dev: string; reason: string }[];
  sideFiles: string[];
  bytesWritten: number;
  dataBytes: number;
  seconds: number;
}

export class PruneError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PruneError';
  }
}

function journalOf(dir: string, plan: PrunePlan): Journal {
  return {
    version: 1,
    cut: plan.cut!,
    started: new Date().toISOString(),
    disks: plan.disks.map((d) => ({ ...d, mtimeMs: statSync(join(dir, d.staging)).mtimeMs })),
    sideFiles: plan.sideFiles,
  };
}

function add(a: ExecuteStats, b: ExecuteStats): ExecuteStats {
  return { written: a.written + b.written, dataBytes: a.dataBytes + b.dataBytes, removed: a.removed + b.removed, seconds: a.seconds + b.seconds };
}

/** Prune `o.input`; returns the summary (throws PruneError/Error on failure). */
export async function prune(o: PruneOptions, log: Logger): Promise<PruneSummary> {
  const dir = resolve(o.input);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new PruneError(`Backup source [${o.input}] does not exist.`);
  let lock: TargetLock;
  try {
    lock = lockTarget(dir);
  } catch (e) {
    if (e instanceof TargetBusyError) throw new PruneError(`A backup or prune is running in [${dir}] (it holds the directory lock); try again later.`);
    throw e;
  }
  try {
    let stats: ExecuteStats = { written: 0, dataBytes: 0, removed: 0, seconds: 0 };
    let resumed: string | undefined;
    const pending = await readJournal(dir);
    if (pending) {
      if (o.dryRun) log.warn(`An interrupted prune (cut at [${pending.cut}], ${JOURNAL_NAME}) is pending; a run without --dry-run finishes it first.`);
      else {
        log.warn(`Finishing an interrupted prune (cut at [${pending.cut}], started ${pending.started}).`);
        stats = add(stats, await executeJournal(dir, pending, log));
        resumed = pending.cut;
      }
    }
    const set = discoverBackupDir(dir);
    if (set.disks.size === 0) throw new PruneError(`No data files found in directory: [${dir}]`);
    if (set.partials.length > 0) log.warn(`Incomplete backup run files in [${dir}] (${set.partials.join(', ')}) are left alone.`);
    const policy: Retention = { keepLast: o.keepLast, keepWithinMs: o.keepWithinMs };
    const plan = planPrune(set, policy, o.now ?? Date.now());
    for (const u of plan.untouched) log.info(`Disk [${u.dev}] is left as it is: ${u.reason}.`);
    if (plan.movedToCheckpoint) log.info(`The oldest point to keep is a differential/offline backup: its checkpoint [${plan.kept[0]?.label}] is kept too.`);
    if (plan.cut === undefined) log.info(`Nothing to prune: ${plan.kept.length} point(s) kept (${plan.kept.map((p) => p.label).join(', ')}).`);
    else {
      log.info(
        `${o.dryRun ? 'Would merge' : 'Merging'} ${plan.pruned.length} point(s) (${plan.pruned.map((p) => p.label).join(', ')}) into a full of [${plan.cut}]; ` +
          `keeping ${plan.kept.length} (${plan.kept.map((p) => p.label).join(', ')}).`,
      );
      if (!o.dryRun) {
        const j = journalOf(dir, plan);
        await writeJournal(dir, j);
        faultPoint('prune:journal-written');
        stats = add(stats, await executeJournal(dir, j, log));
        log.info(
          `Prune done: ${plan.disks.length} new full(s) of [${plan.cut}], ${(stats.dataBytes / 1048576).toFixed(1)} MiB of data ` +
            `(${(stats.written / 1048576).toFixed(1)} MiB written) in ${stats.seconds.toFixed(2)} s, ${stats.removed} file(s) removed.`,
        );
      }
    }
    return {
      input: dir,
      dryRun: o.dryRun,
      resumed,
      cut: plan.cut,
      kept: plan.kept.map((p) => p.label),
      pruned: plan.pruned.map((p) => p.label),
      movedToCheckpoint: plan.movedToCheckpoint,
      disks: plan.disks.map((d) => ({ dev: d.dev, newBase: d.final, merged: [...d.remove, d.staging] })),
      untouched: plan.untouched,
      sideFiles: plan.sideFiles,
      bytesWritten: stats.written,
      dataBytes: stats.dataBytes,
      seconds: stats.seconds,
    };
  } finally {
    lock.release();
  }
}

/** The command: run, print the summary (JSON with --json), map failures to exit 1. */
export async function runPrune(o: PruneOptions, log: Logger, out: (s: string) => void): Promise<number> {
  try {
    const s = await prune(o, log);
    if (o.json) out(`${JSON.stringify(s)}\n`);
    return 0;
  } catch (e) {
    log.error(e instanceof Error ? e.message : String(e));
    if (o.json) out(`${JSON.stringify({ error: e instanceof Error ? e.message : String(e) })}\n`);
    return 1;
  }
}
