/**
 * Carrying out a prune journal (src/prune/journal.ts) so that a kill at any moment leaves a set
 * whose every remaining point still resolves, maps and restores, and the next run finishes the job.
 *
 * Every step is idempotent and decided from what is on disk, so execution and resumption are the
 * same code. Per disk, for the cut file S (the data file of the oldest kept point, an
 * incremental creating checkpoint C):
 *
 *  1. base:    write the synthetic full of C (chain up to S resolved) to `S.prune.partial`
 *              (no reader matches that name), fsync it, give it S's mtime;
 *              remove `S.chksum`, rename the partial over S (atomic), fsync the directory,
 *              write the new `S.chksum`. From here S is a base (`incremental: false`, creates C):
 *              the old chain (full … the inc before S) still resolves every older point, and
 *              the newest points start at S (the chain resolver takes the base of the highest
 *              checkpoint; BEHAVIOUR.md §11.2, fallback fulls).
 *  2. remove:  (only after step 1 is done for every disk) the merged files, newest first:
 *              non-creating deltas, then creating deltas down to the old full, each with its
 *              `.chksum`; every prefix of the old chain stays a valid chain.
 *  3. rename:  `S.chksum` → `<dev>.full.data.chksum`, S → `<dev>.full.data`.
 *  4. side files of the removed points; then the journal is removed.
 *
 * Kill points (src/util/fault-point.ts, `VIRTNBD_FAULT=prune:<step>`) sit between the steps.
 */
import { existsSync, statSync } from 'node:fs';
import { rename, rm, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { discoverBackupDir, selectChain, resolveSelected } from '../chain/index.js';
import { readSavesetMetadata } from '../saveset/reader.js';
import { adler32File, formatChecksum } from '../saveset/adler32.js';
import { syncDir, writeFileAtomic, pathExists } from '../util/atomic-file.js';
import { faultPoint } from '../util/fault-point.js';
import { removeJournal, type Journal, type JournalDisk } from './journal.js';
import { writeSyntheticFull } from './synthetic-full.js';
import type { Logger } from '../log/logger.js';

export const PRUNE_PARTIAL_SUFFIX = '.prune.partial';

export interface ExecuteStats {
  /** Bytes of the new base files written. */
  written: number;
  /** Data bytes (uncompressed) in the new bases. */
  dataBytes: number;
  /** Files removed (data files and their checksums, side files). */
  removed: number;
  seconds: number;
}

async function unlinkIfExists(path: string): Promise<boolean> {
  try {
    await unlink(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/** True when `path` already holds the new base of checkpoint `cut` (a full-type stream). */
function isNewBase(path: string, cut: string): boolean {
  if (!existsSync(path)) return false;
  const { metadata } = readSavesetMetadata(path);
  return !metadata.incremental && metadata.parentCheckpoint === '' && metadata.checkpointName === cut;
}

/** Step 1 for one disk. */
async function makeBase(dir: string, j: Journal, d: JournalDisk, log: Logger, stats: ExecuteStats): Promise<void> {
  const staging = join(dir, d.staging);
  const final = join(dir, d.final);
  if (isNewBase(staging, j.cut) || (!existsSync(staging) && isNewBase(final, j.cut))) {
    if (existsSync(staging) && !existsSync(`${staging}.chksum`)) await writeChecksum(staging);
    return;
  }
  const partial = `${staging}${PRUNE_PARTIAL_SUFFIX}`;
  await unlinkIfExists(partial);
  // The chain of this disk up to the cut, from the set as it is now (nothing of it removed yet).
  const set = discoverBackupDir(dir);
  const chain = selectChain(d.dev, set.disks.get(d.dev) ?? [], j.cut);
  const last = chain.files[chain.files.length - 1];
  if (!last || last.name !== d.staging) throw new Error(`disk [${d.dev}]: the chain up to [${j.cut}] ends with [${last?.name}], the journal expects [${d.staging}]`);
  const resolved = resolveSelected(chain);
  const m = last.metadata;
  log.info(`[${d.dev}]: writing the synthetic full of [${j.cut}] from ${chain.files.length} file(s) (${chain.files.map((f) => f.name).join(', ')}).`);
  let r;
  try {
    r = await writeSyntheticFull(
      resolved.map,
      {
        date: m.date, diskName: d.dev, diskFormat: m.diskFormat, checkpointName: j.cut, compressed: m.compressed,
        compressionMethod: 'lz4', parentCheckpoint: '', incremental: false, streamVersion: 2,
      },
      partial,
    );
  } catch (e) {
    await unlinkIfExists(partial).catch(() => false);
    throw e;
  }
  stats.written += r.bytes;
  stats.dataBytes += r.dataBytes;
  const mtime = new Date(d.mtimeMs);
  await utimes(partial, mtime, mtime);
  faultPoint('prune:base-written');
  await unlinkIfExists(`${staging}.chksum`);
  await rename(partial, staging);
  await syncDir(dir);
  faultPoint('prune:base-switched');
  await writeFileAtomic(`${staging}.chksum`, formatChecksum(r.checksum), { replace: true });
}

async function writeChecksum(path: string): Promise<void> {
  await writeFileAtomic(`${path}.chksum`, formatChecksum(await adler32File(path)), { replace: true });
}

/** Step 3 for one disk. */
async function renameBase(dir: string, j: Journal, d: JournalDisk): Promise<void> {
  const staging = join(dir, d.staging);
  const final = join(dir, d.final);
  if (existsSync(staging)) {
    if (await pathExists(final)) throw new Error(`[${final}] still exists: cannot give the new base [${d.staging}] its name`);
    if (existsSync(`${staging}.chksum`)) await rename(`${staging}.chksum`, `${final}.chksum`);
    faultPoint('prune:chksum-renamed');
    await rename(staging, final);
    await syncDir(dir);
    return;
  }
  if (!isNewBase(final, j.cut)) throw new Error(`neither [${d.staging}] nor a new [${d.final}] of [${j.cut}] exists`);
  if (existsSync(`${staging}.chksum`) && !existsSync(`${final}.chksum`)) await rename(`${staging}.chksum`, `${final}.chksum`);
  if (!existsSync(`${final}.chksum`)) await writeChecksum(final);
}

/** Carry out (or finish) the journal `j` of directory `dir`. */
export async function executeJournal(dir: string, j: Journal, log: Logger): Promise<ExecuteStats> {
  const t0 = performance.now();
  const stats: ExecuteStats = { written: 0, dataBytes: 0, removed: 0, seconds: 0 };
  for (const d of j.disks) await makeBase(dir, j, d, log, stats);
  faultPoint('prune:bases-done');
  // Nothing is removed unless every disk's new base is in place.
  for (const d of j.disks) {
    if (!isNewBase(join(dir, d.staging), j.cut) && !isNewBase(join(dir, d.final), j.cut))
      throw new Error(`disk [${d.dev}]: the new base of [${j.cut}] is missing; nothing removed`);
  }
  for (const d of j.disks) {
    for (const name of d.remove) {
      const p = join(dir, name);
      // After step 3, `<dev>.full.data` is the new base: never remove it (a resumed journal lists the old one).
      if (existsSync(p) && isNewBase(p, j.cut)) continue;
      if (await unlinkIfExists(p)) stats.removed++;
      if (await unlinkIfExists(`${p}.chksum`)) stats.removed++;
      await syncDir(dir);
      faultPoint('prune:removed-one');
    }
    log.info(`[${d.dev}]: removed ${d.remove.length} merged file(s): ${d.remove.join(', ')}.`);
  }
  faultPoint('prune:removed');
  for (const d of j.disks) await renameBase(dir, j, d);
  faultPoint('prune:renamed');
  for (const s of j.sideFiles) {
    const p = join(dir, s);
    try {
      if (statSync(p).isFile()) {
        await rm(p);
        stats.removed++;
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  await syncDir(dir);
  faultPoint('prune:side-files');
  await removeJournal(dir);
  stats.seconds = (performance.now() - t0) / 1000;
  return stats;
}
