/**
 * `virtnbdmap --mount MOUNTPOINT`: single-file restore. The chain is served as for virtnbdmap
 * (src/map/virtnbdmap.ts, on a unix socket in a temp dir), exposed as a block device — /dev/nbdN
 * where the kernel has NBD devices, otherwise a file through nbdfuse — and its file systems are
 * mounted read-only: the whole disk on MOUNTPOINT when it holds a file system, else each
 * partition on MOUNTPOINT/partN through a loop device with the partition's offset and size
 * (partition table read with sfdisk, file systems found with blkid). Partitions without a
 * mountable file system are skipped (INFO); a partition that fails to mount is a warning; nothing
 * mounted at all is an error (exit 1).
 *
 * Read-only: by default the export has nbdkit's cow filter, so the loop device is writable and
 * the file system is mounted `-o ro`: ext4/xfs can replay their journal into the temporary
 * overlay (needed for a crash-consistent backup), the backup files are never written. With
 * `-r/--readonly` (no overlay) the loop device is read-only and ext3/ext4/xfs are mounted
 * `ro,norecovery`.
 *
 * Runs until SIGINT/SIGTERM/SIGHUP, then unmounts (retried while busy, `umount -l` as the last
 * resort with a warning), detaches the loop devices, stops nbdfuse and nbdkit, removes the
 * directories it created and exits 0. A failure during setup undoes every step already done.
 */
import { existsSync, mkdirSync, mkdtempSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startMapping, type MapInfo, type MapLog, type MapOptions, type Mapping } from '../map/virtnbdmap.js';
import { tail } from '../daemon/nbdkit.js';
import { nbdDevicesPresent } from '../map/device.js';
import { which } from '../util/which.js';
import { humanSize } from '../util/humanize.js';
import { scanDisk, mountOptions, type MountPlanEntry } from './partitions.js';
import { attachLoop, detachLoop } from './loop.js';
import { startNbdfuse, type FuseFile } from './nbdfuse.js';
import { mountFs, unmountWithRetry, mountsUnder } from './mounts.js';
import { UndoStack } from './undo.js';
import { createRunDir, noteInRunDir, runDirPrefixes, sweepDeadRunDirs } from '../util/run-dir.js';
import { sleep } from '../util/sleep.js';

export interface MountOptions extends MapOptions {
  mountpoint: string;
}

/** One mounted file system (printed, and listed with --json). */
export interface MountedFs {
  /** Partition number; null when the whole disk is the file system. */
  partition: number | null;
  fstype: string;
  /** Block device mounted (/dev/loopN, /dev/nbdN or /dev/nbdNpM). */
  device: string;
  /** Where it is mounted. */
  path: string;
  options: string;
  offset: number;
  size: number;
}

export interface SkippedArea {
  partition: number | null;
  fstype: string | null;
  reason: string;
}

/** The --json line of `virtnbdmap --mount`. */
export interface MountInfo {
  mountpoint: string;
  /** `nbdfuse` (file + loop devices) or `nbd` (kernel NBD device). */
  backend: 'nbdfuse' | 'nbd';
  /** The file or device showing the whole disk. */
  disk: string;
  mounted: MountedFs[];
  skipped: SkippedArea[];
  failed: { partition: number | null; error: string }[];
  map: MapInfo;
}

class Cancelled extends Error {}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

function requiredTools(useDevice: boolean): string[] {
  const tools = ['nbdkit', 'mount', 'umount', 'blkid', 'sfdisk', 'losetup'];
  if (!useDevice) tools.push('nbdfuse', 'fusermount3');
  return tools;
}

/** Check the mount point given by the user; returns its absolute path or an error message. */
export function checkMountpoint(path: string): { dir: string } | { error: string } {
  const dir = resolve(path);
  let st;
  try {
    st = statSync(dir);
  } catch {
    return { error: `Mount point [${dir}] does not exist` };
  }
  if (!st.isDirectory()) return { error: `Mount point [${dir}] is not a directory` };
  return { dir };
}

export async function runMount(opts: MountOptions, log: MapLog, out: (s: string) => void): Promise<number> {
  // a --mount killed earlier may still hold this mount point: clean up after dead runs first
  for (const p of runDirPrefixes()) await sweepDeadRunDirs(p, (l) => log.warn(l));
  const mp = checkMountpoint(opts.mountpoint);
  if ('error' in mp) {
    log.error(mp.error);
    return 1;
  }
  const mountpoint = mp.dir;
  const useDevice = !opts.noDevice && nbdDevicesPresent();
  const missing = requiredTools(useDevice).filter((t) => !which(t));
  if (missing.length > 0) {
    log.error(`Please install required utilities: [${missing.join(', ')}]`);
    return 1;
  }

  // Signals are caught from the start: a Ctrl-C during setup undoes what was done so far.
  let signalled: string | undefined;
  let onSignal: (s: string) => void = () => undefined;
  const signal = new Promise<string>((res) => (onSignal = res));
  const handlers = SIGNALS.map((s) => {
    const h = (): void => {
      if (signalled) {
        log.info(`Signal ${s} received again, still cleaning up`);
        return;
      }
      signalled = s;
      onSignal(s);
    };
    process.on(s, h);
    return [s, h] as const;
  });
  const checkCancel = (): void => {
    if (signalled) throw new Cancelled(`Signal ${signalled} received during setup`);
  };

  const undo = new UndoStack();
  const cleanup = async (): Promise<number> => {
    const failures = await undo.run((m) => log.error(`Cleanup: ${m}`));
    for (const [s, h] of handlers) process.off(s, h);
    return failures.length;
  };

  let mapping: Mapping;
  let fuse: FuseFile | undefined;
  const mounted: MountedFs[] = [];
  const skipped: SkippedArea[] = [];
  const failed: { partition: number | null; error: string }[] = [];
  let disk: string;
  try {
    // owner.json (with the mount point): a later run cleans up after us if we are killed
    const tmp = await createRunDir(join(tmpdir(), 'virtnbd-mount-'), 'virtnbdmap --mount', { mountpoint }, (l) => log.warn(l));
    undo.push(`remove [${tmp}]`, () => {
      const left = mountsUnder(tmp);
      if (left.length > 0) throw new Error(`still mounted: ${left.join(', ')}; directory left in place`);
      rmSync(tmp, { recursive: true, force: true });
    });
    const socket = opts.socket ?? join(tmp, 'nbd.sock');
    mapping = await startMapping({ ...opts, socket, noDevice: !useDevice, json: false }, log);
    undo.push('stop the NBD export', () => mapping.close());
    checkCancel();

    if (useDevice) {
      if (!mapping.info.device) throw new Error('the NBD device was not connected');
      disk = mapping.info.device;
    } else {
      const dir = join(tmp, 'fuse');
      mkdirSync(dir);
      fuse = await startNbdfuse({ dir, uri: mapping.info.uri, size: mapping.info.size, readonly: opts.readonly });
      const f = fuse;
      noteInRunDir(tmp, { pids: [f.pid] });
      undo.push(`stop nbdfuse [${dir}]`, () => f.stop());
      disk = fuse.file;
      log.info(`Export exposed as [${disk}] through nbdfuse (pid ${fuse.pid})`);
    }
    checkCancel();

    const plan = await scanDisk(disk, mapping.info.size);
    for (const entry of plan) {
      checkCancel();
      const name = entry.partition === null ? 'Disk' : `Partition ${entry.partition}`;
      if (entry.reason !== undefined) {
        log.info(`${name} [${humanSize(entry.size)}]: ${entry.reason}, not mounted`);
        skipped.push({ partition: entry.partition, fstype: entry.fstype, reason: entry.reason });
        continue;
      }
      try {
        mounted.push(await mountEntry(entry, disk, useDevice, mountpoint, opts.readonly, undo, log));
      } catch (e) {
        log.warn(`${name} (${entry.fstype}): ${(e as Error).message}`);
        failed.push({ partition: entry.partition, error: (e as Error).message });
      }
    }
    checkCancel();
    if (mounted.length === 0) throw new Error(`Nothing could be mounted from disk [${mapping.info.files[0] ?? disk}]`);
  } catch (e) {
    if (e instanceof Cancelled) {
      log.info(`${e.message}, cleaning up`);
      return (await cleanup()) > 0 ? 1 : 0;
    }
    log.error((e as Error).message);
    await cleanup();
    return 1;
  }

  for (const m of mounted)
    log.info(
      `Mounted ${m.partition === null ? 'disk' : `partition ${m.partition}`} (${m.fstype}, ${humanSize(m.size)}) ` +
        `from [${m.device}] on [${m.path}] (${m.options})`,
    );
  if (opts.json) {
    const info: MountInfo = { mountpoint, backend: useDevice ? 'nbd' : 'nbdfuse', disk, mounted, skipped, failed, map: mapping.info };
    out(JSON.stringify(info) + '\n');
  }
  log.info('Press Ctrl-C (or send SIGTERM) to unmount and clean up.');

  const watchers: Promise<string | { what: string; code: number | undefined; signal: string | undefined }>[] = [
    signal,
    mapping.server.exited.then((r) => ({ what: 'nbdkit', ...r })),
  ];
  if (fuse) {
    const f = fuse;
    watchers.push(f.exited.then((r) => ({ what: 'nbdfuse', ...r })));
  }
  let winner = await Promise.race(watchers);
  if (typeof winner !== 'string') {
    // a terminal Ctrl-C reaches nbdkit too: give our own signal handler a moment to tell
    await sleep(200);
    if (signalled) winner = signalled;
  }
  if (typeof winner === 'string') {
    log.info(`Signal ${winner} received, unmounting and cleaning up`);
    const failures = await cleanup();
    if (failures === 0) log.info('All file systems unmounted, cleanup done');
    return failures > 0 ? 1 : 0;
  }
  log.error(
    `${winner.what} exited unexpectedly (${winner.code ?? winner.signal}); unmounting` +
      (winner.what === 'nbdkit' ? `; its last messages:\n${tail(mapping.info.nbdkitLog)}` : ''),
  );
  await cleanup();
  return 1;
}

/**
 * Mount one plan entry: create MOUNTPOINT/partN if needed, attach a loop device (or use the NBD
 * device / its partition node), mount read-only. Pushes the undo actions only once mounted; on
 * failure, undoes its own steps and throws.
 */
async function mountEntry(
  entry: MountPlanEntry,
  disk: string,
  useDevice: boolean,
  mountpoint: string,
  readonly: boolean,
  undo: UndoStack,
  log: MapLog,
): Promise<MountedFs> {
  const fstype = entry.fstype ?? 'auto';
  const path = entry.partition === null ? mountpoint : join(mountpoint, `part${entry.partition}`);
  const local = new UndoStack();
  try {
    if (!existsSync(path)) {
      mkdirSync(path);
      local.push(`remove [${path}]`, () => rmdirSync(path));
    }
    let device: string;
    if (useDevice && entry.partition === null) device = disk;
    else if (useDevice && existsSync(`${disk}p${entry.partition}`)) device = `${disk}p${entry.partition}`;
    else {
      const loop = await attachLoop(disk, { offset: entry.offset, size: entry.size, readonly });
      local.push(`detach [${loop}]`, () => detachLoop(loop));
      device = loop;
    }
    const options = mountOptions(fstype, readonly);
    await mountFs(device, path, entry.fstype, options);
    local.push(`unmount [${path}]`, async () => {
      const r = await unmountWithRetry(path);
      if (r.lazy) log.warn(`[${path}] was busy after ${r.attempts - 1} attempts: lazily unmounted (umount -l)`);
      else if (r.attempts > 1) log.info(`[${path}] was busy, unmounted at attempt ${r.attempts}`);
    });
    local.moveTo(undo);
    return { partition: entry.partition, fstype, device, path, options, offset: entry.offset, size: entry.size };
  } catch (e) {
    await local.run((m) => log.error(`Cleanup after failed mount: ${m}`));
    throw e;
  }
}
