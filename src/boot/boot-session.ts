/**
 * One VM booted from a backup point, set up and torn down (issue 5; shared by `--boot` in
 * run-boot.ts and `--boot --verify` in verify.ts):
 *
 * 1. The point's vmconfig (newest, or `--until`) names the disks; every disk in the backup gets
 *    its own export (exports.ts: plugin + cow filter on a unix socket), nothing is replayed or
 *    copied first.
 * 2. Boot files (kernel, initrd, loader, nvram) are copied from the backup into the run
 *    directory (qemu may change nvram, and libvirt relabels files it hands to qemu: the backup's
 *    own files are never given to it).
 * 3. The domain XML is derived from the vmconfig (boot-config.ts; a caller may edit the vmconfig
 *    first, e.g. verify's isolation) and started as a transient domain named `--name` or
 *    `restore_<original>`.
 * `cleanup()` shuts the VM down (ACPI request, powered off after --shutdown-timeout), stops the
 * exports and removes the run directory (overlays kept with --keep-overlays). A failure during
 * set-up cleans up what was made before it is rethrown.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { execa } from 'execa';
import { discoverBackupDir } from '../chain/index.js';
import { parseDomainXml } from '../xml/domain-xml.js';
import { selectPointFiles, requireVmconfig } from '../chain/point.js';
import { findBootFileCopy } from '../restore/boot-files.js';
import { VirtConnection, DOMAIN_START, VIR_ERR, type VirtDomain } from '../virt/client.js';
import { nbdUri } from '../daemon/nbdkit.js';
import type { MapLog, MapOptions } from '../map/virtnbdmap.js';
import { bootDomainXml, type BootDiskSource } from './boot-config.js';
import { bootDomainName } from './domain-name.js';
import { startDiskExports, stopDiskExports, type DiskExport } from './exports.js';
import { assertNoSymlink, childPath, copyFileNoFollow, writeFileNoFollow } from '../util/safe-path.js';
import { MAX_XML_FILE, readTextCappedSync } from '../util/read-capped.js';
import { createRunDirSync } from '../util/run-dir.js';
import { sleep } from '../util/sleep.js';

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

export interface SessionHooks {
  /** Called between the set-up steps; throw to abort (e.g. a signal arrived). */
  step?: () => void;
  /** Edits the backed-up vmconfig before the boot XML is derived from it. */
  editVmconfig?: (vmconfig: string) => string;
  /** createXML flags (default: AUTODESTROY, the domain goes when our connection does). */
  startFlags?: number;
}

export interface BootSession {
  info: BootInfo;
  dom: VirtDomain;
  exports: DiskExport[];
  /** The point's ident (checkpoint name, or `copy`). */
  ident: string;
  /** Stops the domain (unless released), the exports; removes the run directory. Idempotent. */
  cleanup(): Promise<void>;
  /** The domain no longer needs the backup (migrated): cleanup leaves it running. */
  release(): void;
}


/** The run directory: --overlay-dir (created if needed) or a new one under /var/tmp that qemu can reach. */
function makeRunDir(o: BootOptions): { dir: string; ours: boolean } {
  if (o.overlayDir !== undefined) {
    const dir = resolve(o.overlayDir);
    const ours = !existsSync(dir);
    mkdirSync(dir, { recursive: true });
    chmodSync(dir, 0o711);
    return { dir, ours };
  }
  // owner.json: swept by a later run if we die — never with --keep-overlays (the user's writes live there)
  const dir = o.keepOverlays ? mkdtempSync('/var/tmp/virtnbd-boot-') : createRunDirSync('/var/tmp/virtnbd-boot-', 'virtnbdmap --boot');
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
    // a kept overlay is reused and chmod'ed: never through a symlink planted in --overlay-dir
    assertNoSymlink(overlay);
    assertNoSymlink(stamp);
    if (existsSync(overlay)) {
      const was = existsSync(stamp) ? readFileSync(stamp, 'utf8') : '';
      if (was !== chain) throw new BootError(`Overlay [${overlay}] belongs to another backup point (see ${stamp}); use another --overlay-dir.`);
      log.info(`Disk [${x.dev}]: continuing with the kept overlay [${overlay}]`);
    } else {
      const backing = nbdUri(x.exportName, x.socket);
      await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-F', 'raw', '-b', backing, overlay, String(x.size)]);
      writeFileNoFollow(stamp, chain, 0o600);
      log.info(`Disk [${x.dev}]: writes go to the overlay [${overlay}] (kept at the end)`);
    }
    chmodSync(overlay, 0o666);
    out.set(x.dev, overlay);
  }
  return out;
}

/** True when the domain is not running (or libvirt no longer knows it). */
export async function domainGone(dom: VirtDomain): Promise<boolean> {
  try {
    return !(await dom.isActive());
  } catch (e) {
    if ((e as { code?: number }).code === VIR_ERR.NO_DOMAIN) return true;
    throw e;
  }
}

/** ACPI shutdown, then power off after `timeoutS`. */
export async function stopDomain(dom: VirtDomain, timeoutS: number, log: MapLog): Promise<void> {
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

/** Exports, boot files, domain XML, start. On failure everything made so far is removed again. */
export async function startBootSession(o: BootOptions, log: MapLog, hooks: SessionHooks = {}): Promise<BootSession> {
  const input = resolve(o.input);
  const step = hooks.step ?? ((): void => undefined);
  let conn: VirtConnection | undefined;
  let exports: DiskExport[] = [];
  let run: { dir: string; ours: boolean } | undefined;
  const ourFiles: string[] = [];
  let dom: VirtDomain | undefined;
  let released = false;
  let cleaning: Promise<void> | undefined;

  const cleanup = (): Promise<void> =>
    (cleaning ??= (async () => {
      if (dom !== undefined && !released) {
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
    })());

  try {
    // the point and its configuration
    const set = discoverBackupDir(input);
    if (set.partials.length) log.warn(`Incomplete backup files in [${input}] ignored: ${set.partials.join(', ')}`);
    const point = selectPointFiles(input, undefined, o.until);
    const vmconfigFile = requireVmconfig(point, input);
    let vmconfig = readTextCappedSync(vmconfigFile.path, MAX_XML_FILE);
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
      const dest = childPath(run.dir, `${key}-${found}`, 'boot file name');
      // never through a symlink planted in --overlay-dir (src/util/safe-path.ts)
      copyFileNoFollow(join(input, found), dest, key === 'nvram' ? 0o666 : 0o644);
      ourFiles.push(dest);
      bootFiles.set(original, dest);
    }

    if (hooks.editVmconfig !== undefined) vmconfig = hooks.editVmconfig(vmconfig);
    const { xml, consoleLogs } = bootDomainXml(vmconfig, { name, disks, bootFiles, runDir: run.dir }, log);
    for (const c of consoleLogs) assertNoSymlink(c);
    ourFiles.push(...consoleLogs, join(run.dir, 'domain.xml'));
    writeFileNoFollow(join(run.dir, 'domain.xml'), xml, 0o600);
    log.debug(`Domain XML:\n${xml}`);
    step();

    dom = await conn.createXML(xml, hooks.startFlags ?? DOMAIN_START.AUTODESTROY);
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
    return {
      info,
      dom,
      exports,
      ident: point.ident,
      cleanup,
      release: () => {
        released = true;
      },
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}
