/**
 * The online pull-mode backup job (BEHAVIOUR.md §5): its XML, starting it in the documented
 * order (suspend → fsfreeze → begin → thaw → resume), ending it, and the block-job check.
 */
import { randomInt } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from '../log/logger.js';
import { xmlEscape } from '../xml/escape.js';
import { VIR_ERR, VirtError, JOB_TYPE, type VirtDomain } from '../virt/client.js';

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';


function scratchSuffix(): string {
  let s = '';
  for (let i = 0; i < 5; i++) s += ALNUM[randomInt(ALNUM.length)];
  return s;
}

export interface BackupXmlOptions {
  /** Local mode: the unix socket of the NBD server. */
  socketFile?: string;
  /** Remote mode (§8): libvirt's NBD server on TCP `name:port`, TLS per `tls`. */
  tcp?: { name: string; port: number; tls: boolean };
  scratchDir: string;
  devs: string[];
  /** Parent checkpoint of an inc/diff job. */
  incremental?: string;
}

/** §5.1: pull mode over a unix socket (local) or TCP (remote), one scratch file per disk. */
export function backupXml(o: BackupXmlOptions): string {
  const disks = o.devs
    .map((d) => `    <disk name="${xmlEscape(d)}"><scratch file="${xmlEscape(join(o.scratchDir, `backup.${scratchSuffix()}.${d}`))}"/></disk>`)
    .join('\n');
  const inc = o.incremental !== undefined && o.incremental !== '' ? `  <incremental>${xmlEscape(o.incremental)}</incremental>\n` : '';
  let server: string;
  if (o.tcp !== undefined) {
    server = `<server transport="tcp" tls="${o.tcp.tls ? 'yes' : 'no'}" name="${xmlEscape(o.tcp.name)}" port="${o.tcp.port}"/>`;
  } else if (o.socketFile !== undefined) {
    server = `<server transport="unix" socket="${xmlEscape(o.socketFile)}"/>`;
  } else throw new Error('backupXml: neither a socket nor a TCP server given');
  return `<domainbackup mode="pull">\n${inc}  ${server}\n  <disks>\n${disks}\n  </disks>\n</domainbackup>\n`;
}

export interface StartJobOptions {
  backupXml: string;
  checkpointXml: string | null;
  /** --pause (not with -S, not for an already paused domain). */
  pause: boolean;
  /** Domain is paused (e.g. started with -S): no fsfreeze. */
  paused: boolean;
  freezeMountpoints: string[];
  /** libvirt version of the daemon (PRESERVE_SHUTDOWN_DOMAIN from 11.10.0). */
  libVersion: number;
  log: Logger;
}

/** Errors of the job start with the user-facing messages of §3.8. */
export class JobStartError extends Error {
  constructor(message: string, cause?: unknown) {
    super(message, { cause });
    this.name = 'JobStartError';
  }
}

export async function startBackupJob(dom: VirtDomain, o: StartJobOptions): Promise<void> {
  const log = o.log;
  let suspended = false;
  if (o.pause && !o.paused) {
    try {
      await dom.suspend();
      suspended = true;
      log.info('Domain suspended while the backup job starts.');
    } catch (e) {
      log.warn(`Failed to suspend domain: [${(e as Error).message}]`);
    }
  }
  let frozen = false;
  if (!o.paused && !suspended) {
    try {
      const n = await dom.fsFreeze(o.freezeMountpoints);
      frozen = true;
      log.info(`Freezed [${n}] filesystems.`);
    } catch (e) {
      log.warn(`Guest agent is not responding or not configured, fsfreeze failed: [${(e as Error).message}]`);
    }
  } else log.info('Domain is paused: no filesystem freeze needed.');
  try {
    const flags = o.libVersion >= 11_010_000 ? 2 : 0;
    log.debug(`Backup XML:\n${o.backupXml}`);
    if (o.checkpointXml !== null) log.debug(`Checkpoint XML:\n${o.checkpointXml}`);
    await dom.backupBegin(o.backupXml, o.checkpointXml, flags);
    log.info('Started backup job.');
  } catch (e) {
    const v = VirtError.from(e);
    if (v.code === VIR_ERR.CHECKPOINT_INCONSISTENT || /bitmap.*(inconsistent|not found|missing)/i.test(v.message)) {
      throw new JobStartError(`Bitmap inconsistency detected: please cleanup checkpoints using virsh and execute new full backup: ${v.message}`, v);
    }
    throw new JobStartError(`Failed to start backup: [${v.message}]`, v);
  } finally {
    if (frozen) {
      try {
        await dom.fsThaw(o.freezeMountpoints);
        log.info('Filesystems thawed.');
      } catch (e) {
        log.warn(`Failed to thaw filesystems: [${(e as Error).message}]`);
      }
    }
    if (suspended) {
      try {
        await dom.resume();
        log.info('Domain resumed.');
      } catch (e) {
        log.warn(`Failed to resume domain: [${(e as Error).message}]`);
      }
    }
  }
}

/** §5.4: a pull job ends by aborting it; failure is a warning. */
export async function stopBackupJob(dom: VirtDomain, log: Logger): Promise<void> {
  try {
    await dom.abortJob();
    log.info('Backup job stopped.');
  } catch (e) {
    log.warn(`Failed to stop backup job: [${(e as Error).message}]`);
  }
}

/** True when the domain runs a backup job (§5.6; libvirt reports one job per domain). */
export async function hasActiveBackupJob(dom: VirtDomain): Promise<boolean> {
  const info = await dom.jobInfo();
  if (info.type === JOB_TYPE.NONE) return false;
  const op = info.stats.operation;
  // VIR_DOMAIN_JOB_OPERATION_BACKUP = 9
  return op === undefined || op === 9;
}
