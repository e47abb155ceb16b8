/**
 * One virtnbdbackup run (BEHAVIOUR.md §1), step by step: target and lock, level resolution,
 * libvirt connection, checkpoint handling, the pull-mode job (or qemu-nbd for shut-off domains),
 * the disks in parallel, then — only when every disk completed — side files, `.cpt` and the
 * checkpoint XML (D28). Any failure after the job started aborts it, deletes the checkpoint the
 * run created and leaves the target as it was (§3.9).
 *
 * Remote mode (`qemu+ssh` URI, §8): an ssh session to the host libvirt reports (src/remote/);
 * libvirt's NBD server listens on TCP `<nbd-ip or host>:<nbd-port>` (TLS with --tls), shut-off
 * disks are served by qemu-nbd started through ssh on ports N, N+1, …, boot files and
 * `qemu-img info` come through ssh; every remote server is stopped and the session closed on
 * every path (D6).
 */
import { mkdir, readFile, readdir, rm, stat } from 'node:fs/promises';
import { basename, join, posix, resolve } from 'node:path';
import type { Logger } from '../log/logger.js';
import { humanSize } from '../util/humanize.js';
import { faultPoint } from '../util/fault-point.js';
import { VirtConnection, VirtError, VIR_ERR, DOMAIN_START, CHECKPOINT_XML, type VirtDomain } from '../virt/client.js';
import { backupDisk, type DiskBackupResult, type ProgressBar } from './disk-backup.js';
import { backupXml, hasActiveBackupJob, startBackupJob, stopBackupJob } from './job.js';
import { startOfflineServer, type OfflineServer } from './offline-server.js';
import { BackupFatal, checkTargetRules, inspectTarget, rejectCombinations, resolveAuto } from './target-dir.js';
import { lockTarget, type TargetLock } from './target-lock.js';
import { backupCommand, endStaleJob, killCommand, recordJobOwner, removeDeadSocket, waitJobEnded } from './stale-job.js';
import { findUncommittedFull, moveAside } from './uncommitted-full.js';
import { setCheckpointChain, isOurCheckpoint, ourCheckpointNumber } from './cpt-file.js';
import type { ZipStreamWriter } from '../zip/index.js';
import { checkPortRange, clientTlsDir, isRemoteUri, openRemoteSession, remoteHostName, tcpNbdUri, type RemoteOptions } from '../remote/host.js';
import { startRemoteQemuNbd } from '../remote/nbd-server.js';
import type { SshRunner, SshSession } from '../remote/ssh.js';
import type { BackupDisk, BackupLevel, RequestedLevel } from './types.js';
import { parseDomainXml } from '../xml/domain-xml.js';
import { selectDisks, warnTpm } from './disk-selection.js';
import { saveBitlockerKeys, type GuestAgent } from './bitlocker.js';
import { copyBootFiles, directorySink, writeAutostart, writeOsinfo, writeQcowInfo, writeVmconfig, type SideFileSink } from './side-files.js';
import {
  CheckpointError,
  checkpointBitmapDisks,
  checkpointXml,
  deleteOurCheckpoints,
  findForeignCheckpoints,
  inspectInterruptedRun,
  planCheckpoint,
  readCptFile,
  recoverInterruptedRun,
  redefineFromDirectory,
  saveCheckpointXml,
  validateCheckpoint,
  writeCptFile,
} from './checkpoints.js';

export interface BackupOptions {
  domain: string;
  level: RequestedLevel;
  type: 'stream' | 'raw';
  raw: boolean;
  /** Target directory ('-' = zip to stdout, not handled here). */
  output: string;
  checkpointDir?: string;
  scratchDir: string;
  startDomain: boolean;
  pause: boolean;
  include?: string;
  exclude: string[];
  socketFile: string;
  compress: false | number;
  worker?: number;
  freezeMountpoints: string[];
  strict: boolean;
  noSparseDetection: boolean;
  threshold?: number;
  uri: string;
  user?: string;
  password?: string;
  useNbdinfo: boolean;
  startOnly: boolean;
  killOnly: boolean;
  printOnly: boolean;
  /** The remote option group (used when `uri` contains `qemu+ssh`, §8). */
  remote?: RemoteOptions;
  /** `--chain NAME`: an independent chain with checkpoints `virtnbdbackup.NAME.<N>` (undefined: the original's names). */
  chain?: string;
}

/** Defaults of the remote option group (CLI.md §2.1). */
const REMOTE_DEFAULTS: RemoteOptions = { sshPort: 22, nbdPort: 10809, nbdIp: '', tls: false, tlsCert: '/etc/pki/qemu/' };

export interface BackupSummary {
  level: BackupLevel | null;
  checkpoint: string | null;
  files: DiskBackupResult[];
  bytes: number;
  dataSize: number;
  seconds: number;
  exitCode: number;
}

export interface RunEnv {
  log: Logger;
  /** Zip mode (-o -): everything goes into this archive; chain state lives in the current directory. */
  zip?: ZipStreamWriter;
  /** Progress bars (undefined = none). */
  progress?: (label: string, total: number) => ProgressBar;
  /** Fires on SIGINT/SIGTERM/SIGHUP. */
  signal: AbortSignal;
  /** Unix time of the run (one per run, D26). */
  now?: Date;
  /** Remote mode: more ssh client arguments (tests: a private known-hosts file), or another runner. */
  ssh?: { extraArgs?: string[]; runner?: SshRunner };
}

const isDelta = (l: BackupLevel): boolean => l === 'inc' || l === 'diff';
/** libvirt's messages for a connection that is gone (RPC socket closed, ssh transport ended). */
const LIBVIRT_CONNECTION_LOST = /client socket is closed|Cannot (write|recv) data|End of file while reading data|Broken pipe|connection (closed|reset)/i;
/** The -U default of the CLI (CLI.md): the system daemon for root, the session daemon otherwise. */
const defaultUri = (): string => (process.geteuid?.() === 0 ? 'qemu:///system' : 'qemu:///session');

/** Runs a backup; returns the summary (exit code inside). Throws only for programming errors. */
export async function runBackup(o: BackupOptions, env: RunEnv): Promise<BackupSummary> {
  setCheckpointChain(o.chain);
  const started = Date.now();
  const log = env.log;
  const summary: BackupSummary = { level: null, checkpoint: null, files: [], bytes: 0, dataSize: 0, seconds: 0, exitCode: 1 };
  const cleanups: Array<() => Promise<void>> = [];
  let lock: TargetLock | undefined;
  try {
    const r = await backupSteps(o, env, summary, cleanups, (l) => (lock = l));
    summary.exitCode = r;
  } catch (e) {
    if (e instanceof BackupFatal || e instanceof CheckpointError) {
      log.error(e.message);
      for (const line of e instanceof BackupFatal ? e.extraLines : []) log.error(line);
    } else if (LIBVIRT_CONNECTION_LOST.test((e as Error).message)) {
      // the libvirt connection died under us (remote: the ssh connection; local: the daemon)
      const why = isRemoteUri(o.uri) ? 'the ssh connection dropped' : 'libvirtd stopped or restarted';
      log.error(`Lost the connection to libvirt [${o.uri}] during the backup (${why}): ${(e as Error).message}`);
      log.debug((e as Error).stack ?? '');
    } else {
      log.error(`Error during backup: ${(e as Error).message}`);
      log.debug((e as Error).stack ?? '');
    }
    summary.exitCode = 1;
  } finally {
    for (const c of cleanups.reverse()) await c().catch((e: unknown) => log.warn(`Clean-up failed: ${(e as Error).message}`));
    lock?.release();
  }
  summary.seconds = (Date.now() - started) / 1000;
  return summary;
}

async function backupSteps(
  o: BackupOptions,
  env: RunEnv,
  summary: BackupSummary,
  cleanups: Array<() => Promise<void>>,
  setLock: (l: TargetLock) => void,
): Promise<number> {
  const log = env.log;
  const zip = env.zip;
  // Zip mode: the chain state (.cpt, checkpoints/) is kept in the current directory (FORMAT.md §7).
  const output = zip !== undefined ? process.cwd() : resolve(o.output);
  const unixTime = Math.floor((env.now ?? new Date()).getTime() / 1000);

  // Step 2 (the CLI created the directory and the log file): one run per target at a time (D41).
  setLock(lockTarget(output));

  // Step 6: option combinations.
  const bad = rejectCombinations({ compress: o.compress, type: o.type, zip: zip !== undefined, raw: o.raw, level: o.level });
  if (bad !== undefined) throw new BackupFatal(bad);

  // Step 7: auto first (D7), then the partial-file guard and the target rules see the real level.
  let target = await inspectTarget(output);
  if (zip === undefined && !o.killOnly && !o.printOnly) {
    // A full/copy that died before it completed left files no point depends on (uncommitted-full.ts).
    const dead = await findUncommittedFull(output, o.domain, target, resolve(o.checkpointDir ?? join(output, 'checkpoints')));
    if (dead !== undefined) {
      if (o.level === 'inc' || o.level === 'diff') {
        throw new BackupFatal(`The ${dead.level} backup in [${output}] never completed (no ${o.domain}.cpt): there is no chain to continue. Start it again with: ${backupCommand(o.domain, o.uri, defaultUri(), ['-l', 'full', '-o', output])}`);
      }
      await moveAside(dead, unixTime, log);
      target = await inspectTarget(output);
    }
  }
  const auto = resolveAuto(o.level, target, output);
  if (auto.message !== undefined) log.info(auto.message);
  let level: BackupLevel = auto.level;
  if (o.type === 'raw' && isDelta(level)) throw new BackupFatal('Stream format raw does not support incremental or differential backup.');

  const checkpointDir = resolve(o.checkpointDir ?? join(output, 'checkpoints'));
  const cptPath = join(output, `${o.domain}.cpt`);
  if (o.domain.includes('/') || o.domain.includes('\0') || o.domain === '.' || o.domain === '..') {
    throw new BackupFatal(`Domain name [${o.domain}] cannot be used as a file name.`);
  }

  // Step 10–11: libvirt and the domain.
  let conn: VirtConnection;
  try {
    conn = await VirtConnection.open(o.uri, { user: o.user, password: o.password });
  } catch (e) {
    const v = VirtError.from(e);
    const suffix = v.code === VIR_ERR.AUTH_FAILED ? ': --user and --password options for SASL authentication are required.' : '';
    throw new BackupFatal(`Can't connect libvirt daemon: [${v.message}${suffix}]`);
  }
  cleanups.push(() => conn.close());
  // §8: a qemu+ssh URI selects remote mode; ssh, the NBD endpoint and qemu-nbd use this host.
  const remoteMode = isRemoteUri(o.uri);
  const ropt: RemoteOptions = { ...REMOTE_DEFAULTS, ...(o.remote ?? {}) };
  let remoteHost = '';
  if (remoteMode) {
    const reported = await conn.hostname().catch((e: unknown) => {
      log.debug(`libvirt did not report a host name: ${(e as Error).message}`);
      return '';
    });
    remoteHost = await remoteHostName(reported, o.uri, log);
  }
  const nbdHost = ropt.nbdIp !== '' ? ropt.nbdIp : remoteHost;
  let dom: VirtDomain;
  try {
    dom = await conn.lookupByName(o.domain);
  } catch (e) {
    throw new BackupFatal(`Unable to find domain [${o.domain}]: ${(e as Error).message}`);
  }
  const libVersion = await conn.libVersion();

  // -k: abort the domain's job, nothing else (§5.5).
  if (o.killOnly) {
    try {
      await dom.abortJob();
      if (!(await waitJobEnded(dom, 30_000))) throw new Error('the job was still running 30 s after the abort');
      log.info(`Stopped backup job of domain [${o.domain}].`);
      return 0;
    } catch (e) {
      log.error(`Failed to stop backup job: [${(e as Error).message}]`);
      return 1;
    }
  }

  let guestInfo: Record<string, number | string | boolean> | undefined;
  if (await dom.isActive()) {
    try {
      guestInfo = await dom.guestInfo();
      log.info(`Guest agent: ${String(guestInfo['os.pretty-name'] ?? '?')} (${String(guestInfo['os.machine'] ?? '?')}), host name [${String(guestInfo.hostname ?? '?')}]`);
    } catch (e) {
      log.debug(`No guest info from the agent: ${(e as Error).message}`);
    }
  }

  // Step 14: domain state.
  let online = await dom.isActive();
  let paused = online && (await dom.state()).name === 'paused';
  if (!online && o.startDomain) {
    try {
      await dom.create(DOMAIN_START.PAUSED | DOMAIN_START.AUTODESTROY);
      online = true;
      paused = true;
      log.info('Started domain in paused state (destroyed again when the backup ends).');
    } catch (e) {
      log.info(`Failed to start domain in paused state: ${(e as Error).message}; continuing offline.`);
    }
  }
  if (!online && o.startOnly) throw new BackupFatal('Domain is offline: must be active for this function.');
  if (!online && o.level === 'auto' && level === 'full') {
    // D7: the original wrote a checkpoint-less "full" here, which no later auto run could extend.
    throw new BackupFatal('Domain is offline: a new backup chain needs a running domain (start it, or use -S to start it paused).');
  }
  if (!online && level === 'full') {
    log.warn('Domain is offline, resetting backup options.');
    log.warn('New Backup level: [copy].');
    level = 'copy';
  }

  // Step 12: feature check, only where a job or checkpoints are needed (D19).
  const xml = await dom.xmlDesc(0);
  const cfg = parseDomainXml(xml);
  if (online && level !== 'copy' && libVersion < 7_006_000 && !cfg.incrementalBackupCapability) {
    throw new BackupFatal('Virtual machine does not support required backup features, please adjust virtual machine configuration.');
  }

  // Step 13: foreign checkpoints (also for auto, after resolution: D7/D21).
  if (level !== 'copy') {
    const foreign = await findForeignCheckpoints(dom);
    if (foreign.length > 0) {
      log.critical(`Foreign checkpoint found: [${foreign[0]}]`);
      log.critical('This checkpoint has not been created by this utility.');
      log.critical('To ensure backup chain consistency, remove existing checkpoints and start a new backup chain by creating a full backup.');
      return 1;
    }
  }

  // Step 15: target rules; step 8: partial files (with recovery, §3.9).
  if (zip === undefined) checkTargetRules(level, target, output, { startOnly: o.startOnly, killOnly: false });
  // A job left by a dead run of ours is ended first (its checkpoint cannot go while it runs).
  if (online) await endStaleJob(dom, o.uri, defaultUri(), log);
  let cpt = await readCptFile(cptPath);
  if (isDelta(level) && zip === undefined) {
    const state = await inspectInterruptedRun({ dom, outputDir: output, cpt, partialFiles: target.partials, log, checkpointDir });
    if (state.kind === 'refuse') {
      if (target.partials.length === 0) throw new BackupFatal(state.message);
      throw new BackupFatal(`Partial backup found in target directory: [${output}]`, ['One of the last backups seems to have failed.', 'Consider re-executing full backup.', state.message]);
    }
    if (state.kind === 'recoverable') await recoverInterruptedRun({ dom, outputDir: output, state, log, unixTime });
  }

  // Step 16: raw disks are never part of inc/diff.
  let includeRaw = o.raw;
  if (o.raw && isDelta(level)) {
    log.warn("Raw disks can't be included during incremental or differential backup.");
    log.warn('Excluding raw disks.');
    includeRaw = false;
  }

  // Step 18–20: disks.
  warnTpm(cfg, log);
  const sel = await selectDisks(cfg, { include: o.include, exclude: o.exclude, raw: includeRaw, libvirtVersion: libVersion }, log, (pool, vol) => conn.storageVolumePath(pool, vol));
  let disks = sel.disks;
  let errors = sel.errors;
  if (isDelta(level)) disks = disks.filter((d) => d.qcow);
  if (disks.length > 0 && disks.every((d) => !d.qcow) && level !== 'copy') {
    log.info('Only raw disks attached, switching to backup mode copy.');
    level = 'copy';
  }
  summary.level = level;

  // Checkpoints (§3.3): plan; the full's deletion comes after every pre-flight check.
  let parentLost = false;
  if (online && level !== 'copy') {
    const neededParent = isDelta(level) ? cpt[cpt.length - 1] : undefined;
    await mkdir(checkpointDir, { recursive: true });
    parentLost = (await redefineFromDirectory(dom, checkpointDir, log, { neededParent })).parentMissingBitmap;
  }
  const plan = await planCheckpoint({
    level,
    online,
    cpt,
    validateParent: async () => {
      const parent = cpt[cpt.length - 1]!;
      if (parentLost) return false; // D36: its bitmap is gone, redefineFromDirectory said so
      try {
        return await validateCheckpoint(await dom.checkpointLookupByName(parent), log);
      } catch (e) {
        log.warn(`Failed to validate checkpoint: [${(e as Error).message}]`);
        return false;
      }
    },
  });
  if (plan.fallbackFull) log.warn(`Checkpoint [${cpt[cpt.length - 1]}] is invalid, switching backup to full.`);
  const effLevel: BackupLevel = plan.level;
  summary.level = effLevel;
  const ident = identFor(effLevel, plan.name, online, unixTime);

  const sink = zip !== undefined ? zipSink(zip) : directorySink(output);
  if (disks.length === 0) {
    let sideSsh: SshSession | undefined;
    if (remoteMode) sideSsh = await openRemoteSession(remoteHost, ropt, log, env.ssh).catch(() => undefined);
    try {
      await writeSideFiles(sink, { xml, cfg, disks, ident, copyRun: effLevel === 'copy', log, autostart: await dom.autostart(), guestInfo, agent: dom, ssh: sideSsh });
    } finally {
      await sideSsh?.close();
    }
    throw new BackupFatal('Unable to detect disks suitable for backup.');
  }

  // D39: every disk of an inc/diff must have a bitmap in the parent checkpoint.
  if (online && isDelta(effLevel) && plan.parent !== '') {
    const parentXml = await (await dom.checkpointLookupByName(plan.parent)).xmlDesc(0);
    const withBitmap = checkpointBitmapDisks(parentXml);
    for (const d of disks) {
      if (!withBitmap.has(d.dev)) {
        throw new BackupFatal(`Disk [${d.dev}] has no bitmap in checkpoint [${plan.parent}] (added or excluded after the full backup): run a full backup, or exclude the disk with -x ${d.dev}.`);
      }
    }
  }

  // Step 21: block jobs.
  if (online && (await hasActiveBackupJob(dom))) {
    throw new BackupFatal(`Active block job for running domain: Check with [virsh domjobinfo ${o.domain}]; end it with: ${killCommand(o.domain, o.uri, defaultUri())}`);
  }

  // Step 22: workers.
  const workers = zip !== undefined ? 1 : Math.max(1, Math.min(o.worker ?? disks.length, disks.length));
  log.info(`Concurrent backup processes: [${workers}]`);

  // Step 25: -p / -T (before anything changes, D18).
  if (o.printOnly || o.threshold !== undefined) {
    if (online && isDelta(effLevel) && plan.parent !== '') {
      const estimate = await estimateCheckpointSize(dom, plan.parent, disks, log);
      if (o.printOnly) {
        log.info(`Estimated checkpoint backup size: [${estimate}] Bytes`);
        return 0;
      }
      if (o.threshold !== undefined && estimate < o.threshold) {
        log.info(`Backup size [${estimate}] does not meet required threshold [${o.threshold}], skipping backup.`);
        return 0;
      }
    } else if (o.threshold !== undefined && !o.printOnly) {
      log.info('Threshold ignored: no size estimate exists for this level (copy/full) or a shut-off domain.');
    }
  }

  // Step 26 (before anything changes): the ssh session of remote mode. Closed last (cleanups run
  // in reverse order), after every remote qemu-nbd was stopped.
  let ssh: SshSession | undefined;
  if (remoteMode) {
    try {
      checkPortRange(ropt.nbdPort, online ? 1 : disks.length);
    } catch (e) {
      throw new BackupFatal((e as Error).message);
    }
    try {
      ssh = await openRemoteSession(remoteHost, ropt, log, env.ssh);
    } catch {
      throw new BackupFatal('Remote backup detected but ssh session setup failed');
    }
    const session = ssh;
    cleanups.push(() => session.close());
  }

  // Step 24 (late, D28/§3.5): a full removes our old checkpoints.
  if (online && effLevel === 'full' && !plan.fallbackFull && !o.printOnly) {
    await deleteOurCheckpoints(dom, cpt, checkpointDir, log);
    cpt = [];
  }

  // Step 27: the job, or qemu-nbd servers.
  faultPoint('backup:before-job'); // test/faults/: every check done, nothing started yet
  const qcowDevs = disks.filter((d) => d.qcow).map((d) => d.dev);
  const createsCheckpoint = online && (effLevel === 'full' || effLevel === 'inc');
  let createdCheckpoint: string | undefined;
  let jobRunning = false;
  const servers = new Map<string, Pick<OfflineServer, 'uri' | 'stop'>>();
  let succeeded = false;
  const socketFile = resolve(o.socketFile);
  if (online) {
    // Remote: the scratch files are on the remote host (qemu creates and removes them there).
    const scratchDir = ssh !== undefined ? posix.resolve('/', o.scratchDir) : resolve(o.scratchDir);
    const jobXml = backupXml({
      ...(ssh !== undefined ? { tcp: { name: nbdHost, port: ropt.nbdPort, tls: ropt.tls } } : { socketFile }),
      scratchDir,
      devs: disks.map((d) => d.dev),
      incremental: isDelta(effLevel) ? plan.parent : undefined,
    });
    const cpXml = createsCheckpoint ? checkpointXml(plan.name, plan.parent, qcowDevs) : null;
    if (ssh !== undefined) await ssh.mkdirp(scratchDir);
    else await mkdir(scratchDir, { recursive: true });
    // The owner record comes first: a run killed from here on leaves a job the next run may end.
    const dropOwner = await recordJobOwner(o.uri, o.domain, { socket: ssh !== undefined ? undefined : socketFile, checkpoint: cpXml !== null ? plan.name : undefined });
    // kept while the job may still run (e.g. the connection died before it could be aborted):
    // the next run sees a dead owner and ends the job
    cleanups.push(async () => {
      if (!(await hasActiveBackupJob(dom).catch(() => true))) dropOwner();
    });
    await startBackupJob(dom, { backupXml: jobXml, checkpointXml: cpXml, pause: o.pause && !o.startDomain, paused, freezeMountpoints: o.freezeMountpoints, libVersion, log });
    jobRunning = true;
    if (cpXml !== null) createdCheckpoint = plan.name;
    faultPoint('backup:job-started'); // test/faults/: the job runs, its checkpoint exists in libvirt only
    if (o.startOnly) {
      dropOwner(); // -s: the job is meant to outlive this run
      const where = ssh !== undefined ? tcpNbdUri(nbdHost, ropt.nbdPort, '', ropt.tls) : socketFile;
      log.info(`Backup job started; NBD server on [${where}]${createdCheckpoint !== undefined ? `, checkpoint [${createdCheckpoint}] created (not recorded in ${o.domain}.cpt)` : ''}.`);
      return 0;
    }
    cleanups.push(async () => {
      if (jobRunning) await stopBackupJob(dom, log);
      jobRunning = false;
      if (ssh === undefined) await removeDeadSocket(dom, socketFile, log); // qemu died with the job: its socket stays
      if (!succeeded && createdCheckpoint !== undefined) {
        try {
          await (await dom.checkpointLookupByName(createdCheckpoint)).delete();
          log.info(`Removed checkpoint [${createdCheckpoint}] of the failed run: the next backup continues from [${plan.parent || 'a new full'}].`);
        } catch (e) {
          log.warn(`Failed to remove checkpoint [${createdCheckpoint}] of the failed run: ${(e as Error).message}`);
        }
      }
    });
  } else {
    cleanups.push(async () => {
      for (const s of servers.values()) await s.stop();
    });
    if (ssh !== undefined) log.info(`Remote NBD ports used for the offline backup: [${ropt.nbdPort}-${ropt.nbdPort + disks.length - 1}]`);
  }
  const diskIndex = new Map(disks.map((d, i) => [d.dev, i]));

  // Step 30: the disks.
  const results: DiskBackupResult[] = [];
  // §3.9: a run that fails leaves the target as it was: the files of disks that did complete are
  // removed too (the chain state was not advanced, so nothing refers to them).
  cleanups.push(async () => {
    if (succeeded || zip !== undefined) return;
    for (const r of results) {
      await rm(r.path, { force: true });
      await rm(`${r.path}.chksum`, { force: true });
      log.info(`Removed [${r.path}] of the failed run.`);
    }
  });
  const queue = [...disks];
  let failed = 0;
  const worker = async (): Promise<void> => {
    for (let d = queue.shift(); d !== undefined; d = queue.shift()) {
      if (env.signal.aborted) return;
      const dlog = log.child(d.dev);
      try {
        let uri = ssh !== undefined ? tcpNbdUri(nbdHost, ropt.nbdPort, d.dev, ropt.tls) : `nbd+unix:///${d.dev}?socket=${socketFile}`;
        let bitmap: string | undefined;
        if (online) {
          if (isDelta(effLevel)) bitmap = `backup-${d.dev}`;
        } else {
          const offlineBitmap = isDelta(effLevel) && d.qcow ? plan.parent : undefined;
          const srv =
            ssh !== undefined
              ? await startRemoteQemuNbd({
                  ssh,
                  image: d.path,
                  format: d.format,
                  exportName: d.dev,
                  port: ropt.nbdPort + diskIndex.get(d.dev)!,
                  bindIp: ropt.nbdIp,
                  connectHost: nbdHost,
                  readOnly: true,
                  bitmap: offlineBitmap,
                  tls: ropt.tls,
                  tlsCert: ropt.tlsCert,
                  extraArgs: ['-e', '2'],
                  log: dlog,
                })
              : await startOfflineServer(d, socketFile, offlineBitmap, dlog);
          servers.set(d.dev, srv);
          uri = srv.uri;
          if (isDelta(effLevel)) bitmap = plan.parent;
        }
        const raw = !d.qcow || o.type === 'raw';
        const res = await backupDisk({
          disk: d,
          uri,
          level: effLevel,
          bitmap,
          dir: output,
          fileName: dataFileName(d, level, effLevel, ident),
          raw,
          compress: raw ? false : o.compress,
          checkpointName: online ? plan.name : isDelta(effLevel) ? plan.parent : plan.name,
          parentCheckpoint: plan.parent,
          incremental: isDelta(effLevel),
          noSparseDetection: o.noSparseDetection,
          useNbdinfo: o.useNbdinfo,
          tls: ssh !== undefined && ropt.tls,
          tlsCertificates: ssh !== undefined && ropt.tls ? clientTlsDir(ropt.tlsCert) : undefined,
          log: dlog,
          progress: env.progress ? (total) => env.progress!(d.dev, total) : undefined,
          signal: env.signal,
          date: env.now,
          zip,
        });
        results.push(res);
        if (queue.length > 0) faultPoint('backup:between-disks'); // test/faults/: one data file complete, the next not begun
        dlog.info(`Backup of disk [${d.dev}] finished: ${res.bytes} bytes [${humanSize(res.bytes)}] written to [${res.path}]`);
      } catch (e) {
        failed++;
        let why = (e as Error).message;
        if (online && !(await dom.isActive().catch(() => true))) why = `domain [${o.domain}] is no longer running (destroyed or crashed during the backup): ${why}`;
        // offline, a parent bitmap lost with a crashed qemu: a paused start lets the run fall back to a full
        if (!online && /of the parent checkpoint is missing/.test(why)) why += ` Run: ${backupCommand(o.domain, o.uri, defaultUri(), ['-l', level, '-S', '-o', output])}`;
        dlog.error(`Backup of disk [${d.dev}] failed: ${why}`);
      } finally {
        await servers.get(d.dev)?.stop();
      }
    }
  };
  await Promise.all(Array.from({ length: workers }, () => worker()));
  summary.files = results;
  if (env.signal.aborted) throw new Error('interrupted by a signal; the backup job was aborted and nothing of this run was kept.');
  if (failed > 0) {
    errors += failed;
    throw new Error(
      `${failed} of ${disks.length} disk(s) failed; ${createdCheckpoint !== undefined ? `checkpoint [${createdCheckpoint}] is removed, ` : ''}` +
        `the files of this run are removed and the chain state (.cpt) is unchanged: the next run continues from where this one started.`,
    );
  }

  // Step 31–32: end the job, then side files and the chain state (D28).
  if (jobRunning) {
    await stopBackupJob(dom, log);
    jobRunning = false;
  }
  faultPoint('backup:after-data'); // test/faults/: every data file complete, no .cpt entry or checkpoint XML yet
  const recordCheckpoint = async (): Promise<void> => {
    if (createdCheckpoint === undefined) return;
    await mkdir(checkpointDir, { recursive: true });
    await saveCheckpointXml(dom, createdCheckpoint, checkpointDir);
    await writeCptFile(cptPath, [...cpt, createdCheckpoint]);
    faultPoint('backup:after-cpt'); // test/faults/: checkpoint recorded; later side files not yet written
    log.info(`Checkpoint [${createdCheckpoint}] recorded in [${cptPath}].`);
    if (zip !== undefined) await addChainStateToZip(zip, cptPath, checkpointDir);
  };
  await writeSideFiles(sink, { xml, cfg, disks, ident, copyRun: effLevel === 'copy', log, autostart: await dom.autostart(), guestInfo, agent: dom, afterVmconfig: recordCheckpoint, ssh });
  succeeded = true;
  summary.checkpoint = createdCheckpoint ?? null;

  // Step 34: result.
  summary.bytes = results.reduce((a, r) => a + r.bytes, 0);
  summary.dataSize = results.reduce((a, r) => a + r.dataSize, 0);
  if (errors > 0 || log.counts.errors > 0) {
    log.error('Error during backup');
    return 1;
  }
  if (o.strict && log.counts.warnings > 0) {
    log.info(`[${log.counts.warnings}] Warnings detected during backup operation, forcing exit code 2`);
    return 2;
  }
  return 0;
}

/** FORMAT.md §6.1. */
function identFor(eff: BackupLevel, name: string, online: boolean, unixTime: number): string {
  if (eff === 'copy') return 'copy';
  // full (also a fallback full, whose files keep the requested inc/diff in their names) and online inc
  if (eff === 'full' || (eff === 'inc' && online)) return name;
  // diff, offline inc (D1: never the parent's name)
  return String(unixTime);
}

/** FORMAT.md §6.2: the requested level stays in the name when the run fell back to full. */
function dataFileName(d: BackupDisk, requested: BackupLevel, eff: BackupLevel, ident: string): string {
  if (!d.qcow || requested === 'copy' || eff === 'copy') return `${d.dev}.copy.data`;
  if (requested === 'full') return `${d.dev}.full.data`;
  return `${d.dev}.${requested}.${ident}.data`;
}

interface SideFileArgs {
  xml: string;
  cfg: ReturnType<typeof parseDomainXml>;
  disks: BackupDisk[];
  ident: string;
  copyRun: boolean;
  log: Logger;
  autostart: boolean;
  guestInfo: Record<string, number | string | boolean> | undefined;
  /** The guest agent, for the BitLocker key export of Windows guests (§10.3). */
  agent?: GuestAgent;
  /** Runs right after vmconfig (zip entry order, FORMAT.md §7: the chain state comes next). */
  afterVmconfig?: () => Promise<void>;
  /** Remote mode: boot files and qemu-img info come from the remote host. */
  ssh?: SshSession;
}

/** Side files in the order of FORMAT.md §7 (the same order is used for directories). */
async function writeSideFiles(sink: SideFileSink, a: SideFileArgs): Promise<void> {
  await writeVmconfig(sink, a.ident, a.xml);
  await a.afterVmconfig?.();
  const ssh = a.ssh;
  await copyBootFiles(sink, a.cfg.bootFiles, a.copyRun ? null : a.ident, a.log, ssh !== undefined ? { fetch: (p) => ssh.readFile(p) } : {});
  await writeQcowInfo(sink, a.disks.filter((d) => d.qcow), a.ident, a.log, ssh !== undefined ? { qemuImgInfo: (p) => ssh.qemuImgInfo(p) } : {});
  if (a.autostart) await writeAutostart(sink, a.ident);
  if (a.guestInfo !== undefined) await writeOsinfo(sink, a.ident, a.guestInfo);
  if (a.guestInfo !== undefined && a.agent !== undefined) await saveBitlockerKeys(a.agent, a.guestInfo, sink, a.ident, a.log);
}

/** Side files as zip entries (their mtime: the source file's, or now). */
function zipSink(zip: ZipStreamWriter): SideFileSink {
  return {
    writeFile: (name, content, mtime) => zip.addFile(name, Buffer.isBuffer(content) ? content : Buffer.from(content, 'utf8'), mtime ?? new Date()),
    copyFile: async (name, sourcePath) => {
      const [content, st] = await Promise.all([readFile(sourcePath), stat(sourcePath)]);
      await zip.addFile(name, content, st.mtime);
    },
  };
}

/** FORMAT.md §7 item 3: `<domain>.cpt`, `checkpoints/`, every `checkpoints/<cpt>.xml` by number. */
async function addChainStateToZip(zip: ZipStreamWriter, cptPath: string, checkpointDir: string): Promise<void> {
  const now = new Date();
  await zip.addFile(basename(cptPath), await readFile(cptPath), now);
  await zip.addDirectory('checkpoints/', now);
  const xmls = (await readdir(checkpointDir))
    .filter((n) => n.endsWith('.xml') && isOurCheckpoint(n.slice(0, -4))) // this chain's (--chain)
    .sort((a, b) => (ourCheckpointNumber(a.slice(0, -4)) ?? 0) - (ourCheckpointNumber(b.slice(0, -4)) ?? 0));
  for (const m of xmls) {
    const p = join(checkpointDir, m);
    await zip.addFile(`checkpoints/${m}`, await readFile(p), (await stat(p)).mtime);
  }
}

/** §9: libvirt's size estimate of a checkpoint: the sum of its disks' `size` attributes. */
async function estimateCheckpointSize(dom: VirtDomain, parent: string, disks: BackupDisk[], log: Logger): Promise<number> {
  let xml: string;
  try {
    xml = await (await dom.checkpointLookupByName(parent)).xmlDesc(CHECKPOINT_XML.SIZE);
  } catch (e) {
    log.warn(`Failed to get checkpoint info with size information: [${(e as Error).message}]`);
    return 0;
  }
  const devs = new Set(disks.map((d) => d.dev));
  let sum = 0;
  for (const m of xml.matchAll(/<disk\s+([^>]*)\/?>/g)) {
    const attrs = m[1]!;
    const name = /name=['"]([^'"]+)['"]/.exec(attrs)?.[1];
    const size = /size=['"]([0-9]+)['"]/.exec(attrs)?.[1];
    if (name !== undefined && size !== undefined && devs.has(name)) sum += Number(size);
  }
  return sum;
}

/** The target must be a directory (created with parents if missing). */
export async function prepareTarget(dir: string): Promise<void> {
  try {
    const s = await stat(dir);
    if (!s.isDirectory()) throw new BackupFatal("Can't open output file: [Specified target is a file, not a directory]");
    return;
  } catch (e) {
    if (e instanceof BackupFatal) throw e;
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  await mkdir(dir, { recursive: true });
}

