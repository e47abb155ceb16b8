/**
 * Move a VM that runs from a backup onto real storage while it runs (issue 5, `--migrate-to`):
 * every disk served from the backup is block-copied (libvirt's block copy = qemu's mirror) into a
 * new qcow2 image in the target directory, and the VM is switched over (pivot) once the copy is
 * in sync; writes the VM made while it ran from the backup are part of what is copied. The
 * domain is then defined persistently with its disks, boot files and console logs in the target
 * directory, so that it is an ordinary domain on ordinary images; the backup exports are no
 * longer used and can be stopped.
 */
import { constants, existsSync } from 'node:fs';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { execa } from 'execa';
import { BLOCK_JOB_ABORT, BLOCK_COPY, DOMAIN_XML, type VirtDomain } from '../virt/client.js';
import { attr, buildDocument, editAttrs, elements, first, parseDocument, setText, textOf } from '../xml/domain-tree.js';
import { parseDomainXml } from '../xml/domain-xml.js';
import { xmlEscape } from '../xml/escape.js';
import type { DiskExport } from './exports.js';
import { sleep } from '../util/sleep.js';

export interface MigrateLog {
  info(msg: string): void;
  debug(msg: string): void;
  warn(msg: string): void;
}

export interface MigrateOptions {
  dir: string;
  /** Poll interval of the block jobs, ms. */
  pollMs?: number;
  /** How long to keep trying the pivot once a copy has caught up, ms. */
  pivotTimeoutMs?: number;
}

export interface MigrateResult {
  /** dev → new image */
  images: Map<string, string>;
  /** Files copied into the target directory (boot files, nvram). */
  files: string[];
}

/** A migration that failed; `switched` lists the disks that already run on their new image. */
export class MigrateError extends Error {
  constructor(
    message: string,
    readonly switched: readonly string[],
  ) {
    super(message);
    this.name = 'MigrateError';
  }
}


/** Copy one disk and pivot to the copy. */
async function copyDisk(dom: VirtDomain, x: DiskExport, image: string, o: MigrateOptions, log: MigrateLog): Promise<void> {
  const dest = `<disk type='file'><driver type='qcow2'/><source file='${xmlEscape(image)}'/></disk>`;
  await dom.blockCopy(x.dev, dest, BLOCK_COPY.REUSE_EXT);
  log.info(`Disk [${x.dev}]: block copy into [${image}] started`);
  const poll = o.pollMs ?? 250;
  let caughtUp: number | undefined;
  let lastPct = -1;
  for (;;) {
    const info = await dom.blockJobInfo(x.dev);
    if (info === null) throw new Error(`Disk [${x.dev}]: the block copy job vanished before the switch-over`);
    const pct = info.end > 0 ? Math.floor((100 * info.cur) / info.end) : 0;
    if (pct >= lastPct + 10) {
      log.info(`Disk [${x.dev}]: ${pct}% copied (${info.cur} of ${info.end} bytes)`);
      lastPct = pct;
    }
    if (info.end > 0 && info.cur === info.end) {
      caughtUp ??= Date.now();
      try {
        await dom.blockJobAbort(x.dev, BLOCK_JOB_ABORT.PIVOT);
        log.info(`Disk [${x.dev}]: switched over to [${image}]`);
        return;
      } catch (e) {
        if (Date.now() - caughtUp > (o.pivotTimeoutMs ?? 120_000)) throw e;
        log.debug(`Disk [${x.dev}]: not ready for the switch-over yet: ${(e as Error).message}`);
      }
    } else caughtUp = undefined;
    await sleep(poll);
  }
}

/** The persistent definition: boot files and file-backed console logs moved into `dir`. */
function persistentXml(liveXml: string, name: string, dir: string, bootCopies: ReadonlyMap<string, string>): string {
  const { nodes, domain } = parseDocument(liveXml);
  const os = first(domain, 'os');
  if (os !== undefined) {
    for (const tag of ['kernel', 'initrd', 'loader', 'nvram']) {
      for (const e of elements(os, tag)) {
        const repl = bootCopies.get(textOf(e).trim());
        if (repl !== undefined) setText(e, repl);
      }
    }
  }
  // serial and console usually share one file: keep them sharing
  const logs = new Map<string, string>();
  for (const devices of elements(domain, 'devices')) {
    for (const tag of ['serial', 'console', 'parallel', 'channel']) {
      for (const c of elements(devices, tag)) {
        const source = first(c, 'source');
        if (attr(c, 'type') !== 'file' || source === undefined) continue;
        const old = attr(source, 'path');
        if (old === undefined) continue;
        let repl = logs.get(old);
        if (repl === undefined) {
          repl = join(dir, `${name}-${tag}${logs.size + 1}.log`);
          logs.set(old, repl);
        }
        editAttrs(source, [{ name: 'path', value: repl }]);
      }
    }
  }
  return buildDocument(liveXml, nodes);
}

/**
 * Copy every exported disk of the running domain into `<dir>/<name>-<dev>.qcow2`, pivot, and
 * define the domain persistently. On failure the started copies are cancelled and the new
 * images removed; the VM keeps running from the backup.
 */
export async function migrateToStorage(dom: VirtDomain, exports: readonly DiskExport[], o: MigrateOptions, log: MigrateLog): Promise<MigrateResult> {
  const dir = resolve(o.dir);
  const name = dom.name;
  const images = new Map<string, string>();
  const created: string[] = [];
  await mkdir(dir, { recursive: true });
  try {
    for (const x of exports) {
      const image = join(dir, `${name}-${x.dev}.qcow2`);
      // qemu-img create would replace an existing file: never touch one
      if (existsSync(image)) throw new Error(`Target image [${image}] exists already, won't overwrite.`);
      await execa('qemu-img', ['create', '-q', '-f', 'qcow2', image, String(x.size)]).catch((e: Error) => {
        throw new Error(`Cannot create [${image}]: ${e.message}`);
      });
      created.push(image);
      images.set(x.dev, image);
    }
  } catch (e) {
    await Promise.all(created.map((p) => rm(p, { force: true })));
    throw e;
  }
  const pivoted = new Set<string>();
  try {
    await Promise.all(
      exports.map(async (x) => {
        await copyDisk(dom, x, images.get(x.dev)!, o, log);
        pivoted.add(x.dev);
      }),
    );
  } catch (e) {
    for (const x of exports) {
      if (pivoted.has(x.dev)) continue;
      await dom.blockJobAbort(x.dev, 0).catch(() => undefined);
    }
    if (pivoted.size === 0) await Promise.all(created.map((p) => rm(p, { force: true })));
    else log.warn(`Disks already switched over stay on their new images: ${[...pivoted].join(', ')}`);
    throw new MigrateError(`Block copy failed: ${(e as Error).message}`, [...pivoted]);
  }
  const all = exports.map((x) => x.dev);
  try {
    return await defineOnStorage(dom, dir, images, log);
  } catch (e) {
    throw new MigrateError(
      `Every disk runs on its new image, but defining the domain persistently failed: ${(e as Error).message}. ` +
        `Save it with: virsh dumpxml ${name} > ${name}.xml && virsh define ${name}.xml`,
      all,
    );
  }
}

/** Copy the boot files into `dir` and define the running domain persistently. */
async function defineOnStorage(dom: VirtDomain, dir: string, images: Map<string, string>, log: MigrateLog): Promise<MigrateResult> {
  const name = dom.name;

  // boot files the VM was started with live in the boot's run directory: copy them along
  const live = await dom.xmlDesc(DOMAIN_XML.MIGRATABLE);
  const { bootFiles } = parseDomainXml(live);
  const copies = new Map<string, string>();
  const files: string[] = [];
  for (const key of ['loader', 'nvram', 'kernel', 'initrd'] as const) {
    const p = bootFiles[key];
    if (p === undefined || p.startsWith('/usr/')) continue; // firmware of the host stays where it is
    const dest = join(dir, `${name}-${basename(p)}`);
    await copyFile(p, dest, constants.COPYFILE_EXCL);
    copies.set(p, dest);
    files.push(dest);
  }
  const xml = persistentXml(live, name, dir, copies);
  await dom.connection.defineXML(xml);
  log.info(`Domain [${name}] is now defined persistently with its disks in [${dir}]`);
  return { images, files };
}
