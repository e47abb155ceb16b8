/**
 * `virtnbdmap -i DIR --boot`: boot a VM straight from a backup point (issue 5).
 *
 * 1. The point's vmconfig (newest, or `--until`) names the disks; every disk in the backup gets
 *    its own export (exports.ts: plugin + cow filter on a unix socket), nothing is replayed or
 *    copied first.
 * 2. Boot files (kernel, initrd, loader, nvram) are copied from the backup into the run
 *    directory (qemu may change nvram, and libvirt relabels files it hands to qemu: the backup's
 *    own files are never given to it).
 * 3. The domain XML is derived from the vmconfig (boot-config.ts) and started as a transient
 *    domain named `--name` or `restore_<original>`.
 * 4. Foreground until Ctrl-C/SIGTERM/SIGHUP, or until the VM stops by itself: then the VM is shut
 *    down (ACPI request, powered off after --shutdown-timeout), the exports stopped and the run
 *    directory removed (overlays kept with --keep-overlays).
 *    With `--migrate-to DIR` the disks are moved onto new images while the VM runs
 *    (migrate.ts); the command then ends and leaves an ordinary persistent domain running.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { execa } from 'execa';
import { discoverBackupDir } from '../chain/index.js';
import { parseDomainXml } from '../backup/domain-xml.js';
import { selectPointFiles, requireVmconfig } from '../restore/point.js';
import { findBootFileCopy } from '../restore/boot-files.js';
import { VirtConnection, DOMAIN_START, VIR_ERR, type VirtDomain } from '../virt/client.js';
import { nbdUri, tail } from '../map/nbdkit.js';
import type { MapLog, MapOptions } from '../map/virtnbdmap.js';
import { bootDomainXml, type BootDiskSource } from './boot-config.js';
import { bootDomainName } from './domain-name.js';
import { startDiskExports, stopDiskExports, type DiskExport } from './exports.js';
import { MigrateError, migrateToStorage } from './migrate.js';

export interface BootOptions extends MapOptions {
  input: string;
  name?: string;
  uri: string;
  migrateTo?: string;
  keepOverlays: boolean;
  overlayDir?: string;
  /** Seconds to wait for an ACPI shutdown before powering off. */
  shutdownTimeout: number;
}

export interface BootInfo {
  name: string;
  uuid: string;
  runDir: string;
  /** New files of file-backed consoles/serial ports, in the order of the XML. */
  consoleLogs: string[];
  disks: Array<{ dev: string; uri: string; socket: string; size: number; files: string[]; overlay: string | null }>;
  checkpoint: string | null;
}

export class BootError extends Error {}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The run directory: --overlay-dir (created if needed) or a new one under /var/tmp that qemu can reach. */
function makeRunDir(o: BootOptions): { dir: string; ours: boolean } {
  if (o.overlayDir !== undefined) {
    const dir = resolve(o.overlayDir);
    const ours = !existsSync(dir);
    mkdirSync(dir, { recursive: true });
    chmodSync(dir, 0o711);
    return { dir, ours };
  }
  const dir = mkdtempSync('/var/tmp/virtnbd-boot-');
  chmodSync(dir, 0o711);
  return { dir, ours: true };
}

/** qcow2 overlays over read-only exports (--keep-overlays): reused when they match this point. */
async function overlaysFor(exports: readonly DiskExport[], runDir: string, log: MapLog): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const x of exports) {
    const overlay = join(runDir, `${x.dev}.overlay.qcow2`);
    const stamp = `${overlay}.chain`;
    const chain = x.chain.files.map((f) => f.path).join('\n') + '\n';
    if (existsSync(overlay)) {
      const was = existsSync(stamp) ? readFileSync(stamp, 'utf8') : '';
      if (was !== chain) throw new BootError(`Overlay [${overlay}] belongs to another backup point (see ${stamp}); use another --overlay-dir.`);
      log.info(`Disk [${x.dev}]: continuing with the kept overlay [${overlay}]`);
    } else {
      const backing = nbdUri(x.exportName, x.socket);
      await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-F', 'raw', '-b', backing, overlay, String(x.size)]);
      writeFileSync(stamp, chain);
      log.info(`Disk [${x.dev}]: writes go to the overlay [${overlay}] (kept at the end)`);
    }
    chmodSync(overlay, 0o666);
    out.set(x.dev, overlay);
  }
  return out;
}

async function domainGone(dom: VirtDomain): Promise<boolean> {
  try {
    return !(await dom.isActive());
  } catch (e) {
    if ((e as { code?: number }).code === VIR_ERR.NO_DOMAIN) return true;
    throw e;
  }
}

/** ACPI shutdown, then power off after `timeoutS`. */
async function stopDomain(dom: VirtDomain, timeoutS: number, log: MapLog): Promise<void> {
  if (await domainGone(dom)) return;
  if (timeoutS > 0) {
    try {
      await dom.shutdown();
      log.info(`Asked [${dom.name}] to shut down; powering it off in ${timeoutS} s if it does not.`);
      const until = Date.now() + timeoutS * 1000;
      while (Date.now() < until) {
        if (await domainGone(dom)) return;
        await sleep(250);
      }
    } catch (e) {
      log.debug(`shutdown request failed: ${(e as Error).message}`);
    }
  }
  if (await domainGone(dom)) return;
  await dom.destroy().catch((e: Error) => {
    if ((e as { code?: number }).code !== VIR_ERR.NO_DOMAIN) throw e;
  });
  log.info(`Powered off [${dom.name}].`);
}

/** Boot, serve, wait, clean up. Returns the exit code. */
export async function runBoot(o: BootOptions, log: MapLog, out: (s: string) => void): Promise<number> {
  const input = resolve(o.input);
  // signals during set-up end it cleanly too (checked between the steps)
  let interrupted: string | undefined;
  // `on`, not `once`: a second Ctrl-C (a terminal sends one to the whole group) must not kill
  // us half-way through the clean-up
  const signalled = new Promise<End>((resolveEnd) => {
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
      process.on(s, () => {
        if (interrupted !== undefined) {
          log.info(`${s} received again: already stopping.`);
          return;
        }
        interrupted = s;
        resolveEnd({ kind: 'signal', signal: s });
      });
  });
  const step = (): void => {
    if (interrupted !== undefined) throw new BootError(`Interrupted by ${interrupted}`);
  };
  let conn: VirtConnection | undefined;
  let exports: DiskExport[] = [];
  let run: { dir: string; ours: boolean } | undefined;
  const ourFiles: string[] = [];
  let dom: VirtDomain | undefined;
  let migrated = false;

  const cleanup = async (): Promise<void> => {
    if (dom !== undefined && !migrated) {
      try {
        await stopDomain(dom, o.shutdownTimeout, log);
      } catch (e) {
        log.error(`Could not stop domain [${dom.name}]: ${(e as Error).message}`);
      }
    }
    await stopDiskExports(exports);
    if (run !== undefined && !o.verbose) {
      if (run.ours && !o.keepOverlays) rmSync(run.dir, { recursive: true, force: true });
      else for (const f of ourFiles) rmSync(f, { force: true });
    }
    await conn?.close().catch(() => undefined);
  };

  try {
    // the point and its configuration
    const set = discoverBackupDir(input);
    if (set.partials.length) log.warn(`Incomplete backup files in [${input}] ignored: ${set.partials.join(', ')}`);
    const point = selectPointFiles(input, undefined, o.until);
    const vmconfigFile = requireVmconfig(point, input);
    const vmconfig = readFileSync(vmconfigFile.path, 'utf8');
    const cfg = parseDomainXml(vmconfig);
    const inBackup = new Set(set.disks.keys());
    const devs = cfg.disks
      .filter((d) => d.device !== 'cdrom' && d.device !== 'floppy' && inBackup.has(d.dev))
      .map((d) => d.dev);
    if (devs.length === 0) throw new BootError(`No disk of the domain configuration [${vmconfigFile.path}] is in the backup.`);
    log.info(`Booting [${cfg.name}] from [${input}] at point [${point.ident}]: disks ${devs.join(', ')}`);

    conn = await VirtConnection.open(o.uri);
    const name = await bootDomainName(conn, cfg.name, o.name);
    run = makeRunDir(o);
    step();

    exports = await startDiskExports(devs, {
      set,
      until: o.until,
      runDir: run.dir,
      readonly: o.keepOverlays,
      workers: o.workers,
      threads: o.threads,
      verbose: o.verbose,
    });
    for (const x of exports) {
      ourFiles.push(x.socket, join(run.dir, `nbdkit-${x.dev}.log`));
      log.info(`Disk [${x.dev}]: ${x.chain.files.length} file(s) served on [${x.socket}] (${x.size} bytes)`);
    }
    const overlays = o.keepOverlays ? await overlaysFor(exports, run.dir, log) : new Map<string, string>();
    step();
    const disks = new Map<string, BootDiskSource>();
    for (const x of exports) {
      const ov = overlays.get(x.dev);
      disks.set(x.dev, ov !== undefined ? { kind: 'file', path: ov, format: 'qcow2' } : { kind: 'nbd', socket: x.socket, exportName: x.exportName });
    }

    // boot files: copies of the backup's copies
    const bootFiles = new Map<string, string>();
    for (const key of ['loader', 'nvram', 'kernel', 'initrd'] as const) {
      const original = cfg.bootFiles[key];
      if (original === undefined) continue;
      const found = await findBootFileCopy(input, original, point.idents, log);
      if (found === undefined) {
        if (existsSync(original)) log.info(`No copy of boot file [${original}] in the backup: using the host's file.`);
        else log.warn(`Unable to identify backup file for [${original}] in specified backup folder [${input}]`);
        continue;
      }
      const dest = join(run.dir, `${key}-${found}`);
      copyFileSync(join(input, found), dest);
      chmodSync(dest, key === 'nvram' ? 0o666 : 0o644);
      ourFiles.push(dest);
      bootFiles.set(original, dest);
    }

    const { xml, consoleLogs } = bootDomainXml(vmconfig, { name, disks, bootFiles, runDir: run.dir }, log);
    ourFiles.push(...consoleLogs, join(run.dir, 'domain.xml'));
    writeFileSync(join(run.dir, 'domain.xml'), xml);
    log.debug(`Domain XML:\n${xml}`);
    step();

    dom = await conn.createXML(xml, o.migrateTo === undefined ? DOMAIN_START.AUTODESTROY : DOMAIN_START.NONE);
    log.info(`Domain [${name}] started from the backup (transient; writes go to ${o.keepOverlays ? 'the kept overlays' : 'temporary overlays'}).`);
    const info: BootInfo = {
      name,
      uuid: dom.uuid,
      runDir: run.dir,
      consoleLogs,
      disks: exports.map((x) => ({
        dev: x.dev,
        uri: x.server.uri,
        socket: x.socket,
        size: x.size,
        files: x.chain.files.map((f) => f.path),
        overlay: overlays.get(x.dev) ?? null,
      })),
      checkpoint: point.chain.checkpoint ?? null,
    };
    if (o.json) out(JSON.stringify(info) + '\n');

    let failed = false;
    if (o.migrateTo !== undefined) {
      try {
        const res = await migrateToStorage(dom, exports, { dir: o.migrateTo }, log);
        migrated = true;
        log.info(
          `Domain [${name}] runs on ${[...res.images.values()].join(', ')}; the backup is released. ` +
            `It is an ordinary persistent domain now (virsh shutdown/start ${name}).`,
        );
        if (o.json) out(JSON.stringify({ migrated: true, name, images: Object.fromEntries(res.images), files: res.files }) + '\n');
        await cleanup();
        return 0;
      } catch (e) {
        log.error((e as Error).message);
        if (e instanceof MigrateError && e.switched.length === exports.length) {
          // nothing needs the backup any more: leave the VM running
          migrated = true;
          await cleanup();
          return 1;
        }
        // the VM still needs the exports: keep serving it until told to stop
        log.error(`[${name}] keeps running from the backup; Ctrl-C stops it.`);
        failed = true;
      }
    }

    if (interrupted !== undefined) throw new BootError(`Interrupted by ${interrupted}`);
    log.info(`Press Ctrl-C (or send SIGTERM) to stop [${name}] and clean up.`);
    const why = await waitForEnd(dom, exports, signalled);
    if (why.kind === 'signal') log.info(`Signal ${why.signal} received, stopping [${name}]`);
    else if (why.kind === 'domain') log.info(`Domain [${name}] has stopped.`);
    else log.error(`The export of disk [${why.dev}] stopped unexpectedly; its last messages:\n${tail(why.log)}`);
    await cleanup();
    return why.kind === 'server' || failed ? 1 : 0;
  } catch (e) {
    log.error((e as Error).message);
    await cleanup();
    return 1;
  }
}

type End = { kind: 'signal'; signal: string } | { kind: 'domain' } | { kind: 'server'; dev: string; log: string };

async function waitForEnd(dom: VirtDomain, exports: readonly DiskExport[], signal: Promise<End>): Promise<End> {
  let stop = false;
  const servers = exports.map((x) => x.server.exited.then((): End => ({ kind: 'server', dev: x.dev, log: x.server.logFile })));
  const domain = (async (): Promise<End> => {
    while (!stop) {
      await sleep(1000);
      if (await domainGone(dom).catch(() => false)) return { kind: 'domain' };
    }
    return { kind: 'domain' };
  })();
  const end = await Promise.race([signal, domain, ...servers]);
  stop = true;
  return end;
}
