/**
 * The backup job of a run that died (SIGKILL, OOM kill): libvirt keeps a pull-mode job and its NBD
 * server running until someone aborts it, and refuses every new backup of the domain meanwhile.
 * Each run records itself as the job's owner (src/util/run-owner.ts) in
 * `<run state dir>/backup-jobs/<hash of uri + domain>.json` while its job runs (not for `-s`, whose
 * job is meant to outlive the run). The next run of the domain finds an active job and:
 * - the record names a process that is gone → ends the job, removes the dead run's NBD socket
 *   and the record (a warning each), and goes on: nothing to do by hand;
 * - otherwise (a live run, an `-s` job, a job of another tool) → refuses with the command that
 *   ends it.
 */
import { createHash } from 'node:crypto';
import { lstatSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log/logger.js';
import { ownerAlive, readOwnerFile, runStateDir, selfOwner, writeOwnerFile } from '../util/run-owner.js';
import { JOB_TYPE, type VirtDomain } from '../virt/client.js';
import { hasActiveBackupJob, stopBackupJob } from './job.js';
import { BackupFatal } from './target-dir.js';
import { sleep } from '../util/sleep.js';

function recordPath(uri: string, domain: string): string {
  const h = createHash('sha256').update(`${uri}\0${domain}`).digest('hex').slice(0, 24);
  return join(runStateDir('backup-jobs'), `${h}.json`);
}

/** The exact command that ends a domain's backup job. */
export function killCommand(domain: string, uri: string, defaultUri: string): string {
  return backupCommand(domain, uri, defaultUri, ['-k']);
}

/** A shell-quoted virtnbdbackup command line for messages. */
export function backupCommand(domain: string, uri: string, defaultUri: string, rest: string[]): string {
  const q = (s: string): string => (/^[A-Za-z0-9_.,:/=@+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  return ['virtnbdbackup', '-d', q(domain), ...(uri !== defaultUri ? ['-U', q(uri)] : []), ...rest.map(q)].join(' ');
}

/** Waits until libvirt reports no job for the domain (an abort takes a moment); false on timeout. */
export async function waitJobEnded(dom: VirtDomain, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while ((await dom.jobInfo()).type !== JOB_TYPE.NONE) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

/** After the run's job ended: its NBD socket, when qemu (killed with the domain) left it behind. */
export async function removeDeadSocket(dom: VirtDomain, socket: string, log: Logger): Promise<void> {
  if (await hasActiveBackupJob(dom).catch(() => false)) return; // still served: not ours to remove
  try {
    if (!lstatSync(socket).isSocket()) return;
  } catch {
    return;
  }
  rmSync(socket, { force: true });
  log.debug(`Removed the NBD socket [${socket}] left by the ended job.`);
}

/** Records this process as the owner of the domain's job; returns the function that removes the record. */
export async function recordJobOwner(uri: string, domain: string, info: { socket?: string; checkpoint?: string }): Promise<() => void> {
  const path = recordPath(uri, domain);
  await writeOwnerFile(path, selfOwner('virtnbdbackup job', { uri, domain, ...info }));
  return () => rmSync(path, { force: true });
}

/**
 * Before a run starts its job: an active backup job left by a dead run of ours is ended (with
 * its socket and record); any other active job → BackupFatal naming the command that ends it.
 */
export async function endStaleJob(dom: VirtDomain, uri: string, defaultUri: string, log: Logger): Promise<void> {
  const path = recordPath(uri, dom.name);
  const rec = readOwnerFile(path);
  if (!(await hasActiveBackupJob(dom))) {
    if (rec !== undefined && !ownerAlive(rec)) rmSync(path, { force: true });
    return;
  }
  if (rec === undefined || ownerAlive(rec)) {
    const who = rec !== undefined ? ` (started by virtnbdbackup pid ${rec.pid}, still running)` : '';
    throw new BackupFatal(
      `Active block job for running domain${who}: Check with [virsh domjobinfo ${dom.name}]; end it with: ${killCommand(dom.name, uri, defaultUri)}`,
    );
  }
  log.warn(`Backup job of domain [${dom.name}] was left by virtnbdbackup pid ${rec.pid}, which is no longer running: ending it.`);
  await stopBackupJob(dom, log);
  if (!(await waitJobEnded(dom, 30_000))) {
    throw new BackupFatal(`The backup job left by virtnbdbackup pid ${rec.pid} did not end; end it with: ${killCommand(dom.name, uri, defaultUri)}`);
  }
  const socket = typeof rec.socket === 'string' ? rec.socket : undefined;
  if (socket !== undefined) {
    try {
      if (lstatSync(socket).isSocket()) {
        rmSync(socket, { force: true });
        log.warn(`Removed the NBD socket [${socket}] of the dead run.`);
      }
    } catch {
      /* gone already */
    }
  }
  rmSync(path, { force: true });
}
