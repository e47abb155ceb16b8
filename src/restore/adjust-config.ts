/**
 * The restored domain configuration (BEHAVIOUR.md §11.7, `-c/--adjust-config`) and the list of
 * disks a restore works on (§11.1).
 *
 * `adjustConfig` edits the domain XML structurally: fast-xml-parser's order-preserving tree with
 * entity processing off, so text, attribute values, entities and character references
 * (`&amp;`, `&apos;`, `&#10;`), comments, CDATA, namespaced elements (`qemu:commandline`) and the
 * whitespace between elements come back as they were. The only textual differences of an
 * untouched part are the ones of any XML serialiser: attributes are written in double quotes
 * (so a literal `'` or `"` inside a value is written as `&apos;` / `&quot;`), and an element with
 * no content is written as `<x/>` — the original (lxml) wrote double quotes too. Whitespace
 * between top-level nodes is written as a single newline; the text before the root element and
 * after the last top-level node is kept.
 *
 * Rules (§11.7), in this order per `devices/disk`:
 *   1. cdrom and floppy devices are removed;
 *   2. raw-format disks are removed unless `keepRaw` (warning);
 *   3. the first `backingStore` child is removed;
 *   6. a disk that was not restored is removed (INFO). That covers disks without a data file
 *      (excluded at backup) and — ours — disks left out with `--disk`, so that the restored
 *      domain never points at the original domain's images;
 *   4. for a restored disk with `source/dataStore`: the data store becomes a file
 *      (`dataStore@type='file'`, `source@file`, no `@dev`) at the new data file path;
 *   5. for a restored disk: `disk@type='file'` and `source@file` = the absolute image path; the
 *      attributes of other source types (`dev`, `pool`, `volume`, `mode`) are dropped (D22 for
 *      block disks; volume disks alike, §11.1). A direct-attached lun restored into an image file
 *      becomes `device='disk'` (a lun needs a block device), without its `sgio`/`rawio`;
 * and for the domain:
 *   7. `<uuid>` is removed;
 *   8. the name becomes `name` if given, else `restore_<name>` unless it already starts with
 *      `restore`, which is kept (D11; the original emptied it).
 *
 * `restoredDiskList` applies the backup's disk selection (§6.1) with `--disk` as the include
 * filter and no exclude, after turning volume disks into file disks at `<output>/<volume name>`.
 */
import { basename, join, resolve } from 'node:path';
import { selectDisks } from '../backup/disk-selection.js';
import { parseDomainXml } from '../xml/domain-xml.js';
import { attr, buildDocument, editAttrs, elements, escapeXml, first, kids, parseDocument, removeChild, setText, textOf, ATTRS, AT, TEXT, type XNode } from '../xml/domain-tree.js';
import type { BackupDisk } from '../backup/types.js';
import type { DomainDisk } from '../xml/domain-types.js';
import type { Logger } from '../log/logger.js';
import { isPlainName } from '../util/safe-path.js';

export interface AdjustConfigOptions {
  /** dev → absolute path of the restored image, for every disk that was restored. */
  restored: Map<string, string>;
  /** dev → absolute path of the new data file, for restored disks with a `dataStore`. Default: `<outputDir>/<base name of the original data file>`. */
  dataFiles?: Map<string, string>;
  /** `--raw`: raw-format disks were restored (copied) and stay in the configuration. */
  keepRaw: boolean;
  /** `--name` */
  name?: string;
  /** The restore's output directory (made absolute here). */
  outputDir: string;
}

// ---------------------------------------------------------------------------------------------
// §11.7

/** Rule 4: point the data store of a restored disk at its new data file. */
function adjustDataStore(dev: string, source: XNode, opts: AdjustConfigOptions, log: Logger): void {
  const ds = first(source, 'dataStore');
  if (ds === undefined) return;
  const dsSource = first(ds, 'source');
  let target = opts.dataFiles?.get(dev);
  if (target === undefined) {
    const old = attr(dsSource, 'file') ?? attr(dsSource, 'dev') ?? '';
    const base = basename(old);
    if (old === '' || base === '' || base === '.' || base === '..') {
      log.error(`Unable to adjust the data file of disk [${dev}]: its original path [${old}] has no usable file name.`);
      return;
    }
    target = join(resolve(opts.outputDir), base);
  }
  target = resolve(target);
  editAttrs(ds, [{ name: 'type', value: 'file' }]);
  if (dsSource === undefined) {
    kids(ds).push({ source: [], [ATTRS]: { [AT + 'file']: escapeXml(target) } });
  } else {
    editAttrs(dsSource, [{ name: 'file', value: target, replaces: ['dev'] }]);
  }
  log.info(`Adjusted data file of disk [${dev}]: [${target}]`);
}

/** Rules 4 and 5 for a restored disk. */
function adjustRestoredDisk(dev: string, disk: XNode, image: string, opts: AdjustConfigOptions, log: Logger): void {
  const path = resolve(image);
  let source = first(disk, 'source');
  if (source === undefined) {
    source = { source: [] };
    const list = kids(disk);
    const driver = first(disk, 'driver');
    list.splice(driver !== undefined ? list.indexOf(driver) + 1 : 0, 0, source);
  } else {
    adjustDataStore(dev, source, opts, log);
  }
  editAttrs(source, [{ name: 'file', value: path, replaces: ['dev', 'pool', 'volume'] }], ['dev', 'pool', 'volume', 'mode']);
  if (attr(disk, 'device') === 'lun') {
    editAttrs(disk, [{ name: 'type', value: 'file' }, { name: 'device', value: 'disk' }], ['sgio', 'rawio']);
    log.info(`Direct attached lun [${dev}] restored into an image file: configured as a disk device.`);
  } else {
    editAttrs(disk, [{ name: 'type', value: 'file' }]);
  }
  log.info(`Adjusted disk [${dev}]: source file [${path}]`);
}

/**
 * Apply §11.7 rules 1–8 to the domain XML `xml` (the vmconfig of the restored point) and return
 * the adjusted XML. Throws `Invalid domain XML: ...` when `xml` cannot be parsed.
 */
export function adjustConfig(xml: string, opts: AdjustConfigOptions, log: Logger): string {
  const { nodes, domain } = parseDocument(xml);
  const seen = new Set<string>();

  for (const devices of elements(domain, 'devices')) {
    for (const disk of elements(devices, 'disk')) {
      const dev = attr(first(disk, 'target'), 'dev') ?? '';
      const device = attr(disk, 'device') ?? 'disk';
      // 1
      if (device === 'cdrom' || device === 'floppy') {
        log.info(`Removing [${device}] device [${dev}] from vm config.`);
        removeChild(devices, disk);
        continue;
      }
      // 2
      if (attr(first(disk, 'driver'), 'type') === 'raw' && !opts.keepRaw) {
        log.warn(`Removing raw disk [${dev}] from vm config, use --raw to copy as is.`);
        removeChild(devices, disk);
        continue;
      }
      // 3
      const backing = first(disk, 'backingStore');
      if (backing !== undefined) removeChild(disk, backing);
      // 6
      const image = dev === '' ? undefined : opts.restored.get(dev);
      if (image === undefined) {
        log.info(`Removing disk [${dev}] from vm config: it has not been restored.`);
        removeChild(devices, disk);
        continue;
      }
      // 4, 5
      seen.add(dev);
      adjustRestoredDisk(dev, disk, image, opts, log);
    }
  }
  for (const dev of opts.restored.keys()) {
    if (!seen.has(dev)) log.debug(`Restored disk [${dev}] is not part of the vm config.`);
  }

  // 7
  for (const uuid of elements(domain, 'uuid')) removeChild(domain, uuid);

  // 8
  const nameEl = first(domain, 'name');
  const oldName = nameEl !== undefined ? textOf(nameEl).trim() : '';
  const newName = opts.name ?? (oldName.startsWith('restore') ? oldName : `restore_${oldName}`);
  if (nameEl !== undefined) setText(nameEl, newName);
  else kids(domain).unshift({ name: [{ [TEXT]: escapeXml(newName) }] });
  if (newName !== oldName) log.info(`Changing name from [${oldName}] to [${newName}]`);

  return buildDocument(xml, nodes);
}

// ---------------------------------------------------------------------------------------------
// §11.1: disks to restore

export interface RestoredDiskListOptions {
  /** `--disk`: only this disk (exact match). */
  disk?: string;
  /** `--raw` */
  raw: boolean;
  /**
   * The restore's output directory: volume disks become file disks at `<outputDir>/<volume name>`.
   * Without it their path is the bare volume name (consumers use its base name only).
   */
  outputDir?: string;
}


function volumeToFile(disk: DomainDisk, outputDir: string | undefined, log: Logger): DomainDisk {
  const { pool, volume } = disk.volume ?? { pool: '', volume: '' };
  const name = isPlainName(volume) ? volume : disk.dev;
  const path = outputDir !== undefined ? join(resolve(outputDir), name) : name;
  log.warn(`Disk [${disk.dev}] is storage volume [${volume}] of pool [${pool}]: restoring it as file [${path}].`);
  return { ...disk, type: 'file', path, backingChain: [...disk.backingChain] };
}

/**
 * The disks to restore from the vmconfig `vmconfigXml` (§11.1): volume disks converted to file
 * disks (warning), then the backup's selection rules (§6.1) with `disk` as include filter, no
 * exclude and the restore's `--raw`. Throws `Unable to parse disks from config` when no disk
 * qualifies, and `Invalid domain XML: ...` when the XML cannot be parsed.
 */
export async function restoredDiskList(vmconfigXml: string, opts: RestoredDiskListOptions, log: Logger): Promise<BackupDisk[]> {
  const cfg = parseDomainXml(vmconfigXml);
  const disks = cfg.disks.map((d) =>
    d.type === 'volume' && d.volume !== undefined && d.device !== 'cdrom' && d.device !== 'floppy' && (opts.disk === undefined || d.dev === opts.disk)
      ? volumeToFile(d, opts.outputDir, log)
      : d,
  );
  const { disks: selected } = await selectDisks({ ...cfg, disks }, { include: opts.disk, raw: opts.raw }, log);
  if (selected.length === 0) throw new Error('Unable to parse disks from config');
  return selected;
}
