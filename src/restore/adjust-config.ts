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
import { XMLBuilder, XMLParser, XMLValidator } from 'fast-xml-parser';
import { selectDisks } from '../backup/disk-selection.js';
import { decodeXmlEntities, parseDomainXml } from '../backup/domain-xml.js';
import type { BackupDisk, DomainDisk } from '../backup/types.js';
import type { Logger } from '../log/logger.js';

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
// The order-preserving tree of fast-xml-parser

/** One node: `{ tag: children, ':@'?: attributes }`, `{ '#text': raw }`, `{ '#comment': [...] }`, ... */
type XNode = Record<string, unknown>;
type XAttrs = Record<string, string>;

const ATTRS = ':@';
const TEXT = '#text';
const COMMENT = '#comment';
const CDATA = '#cdata';
const AT = '@_';

const PARSER = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: AT,
  allowBooleanAttributes: false,
  parseTagValue: false,
  parseAttributeValue: false,
  processEntities: false,
  htmlEntities: false,
  trimValues: false,
  ignoreDeclaration: false,
  ignorePiTags: false,
  removeNSPrefix: false,
  commentPropName: COMMENT,
  cdataPropName: CDATA,
  textNodeName: TEXT,
});

const BUILDER = new XMLBuilder({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: AT,
  processEntities: false,
  suppressEmptyNode: true,
  suppressBooleanAttributes: false,
  format: false,
  commentPropName: COMMENT,
  cdataPropName: CDATA,
  textNodeName: TEXT,
});

function tagOf(n: XNode): string {
  for (const k of Object.keys(n)) if (k !== ATTRS) return k;
  return '';
}

function isElement(n: XNode): boolean {
  const t = tagOf(n);
  return t !== '' && t !== TEXT && t !== COMMENT && t !== CDATA && !t.startsWith('?');
}

function kids(n: XNode): XNode[] {
  const v = n[tagOf(n)];
  return Array.isArray(v) ? (v as XNode[]) : [];
}

function elements(n: XNode, tag: string): XNode[] {
  return kids(n).filter((k) => isElement(k) && tagOf(k) === tag);
}

function first(n: XNode | undefined, tag: string): XNode | undefined {
  return n === undefined ? undefined : elements(n, tag)[0];
}

function attrMap(n: XNode): XAttrs | undefined {
  const a = n[ATTRS];
  return typeof a === 'object' && a !== null ? (a as XAttrs) : undefined;
}

/** Decoded attribute value. */
function attr(n: XNode | undefined, name: string): string | undefined {
  const v = n === undefined ? undefined : attrMap(n)?.[AT + name];
  return typeof v === 'string' ? decodeXmlEntities(v) : undefined;
}

/** Escape a value for raw storage in the tree (the builder adds the quote escapes). */
function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * Set attributes of `n`, keeping the order of the others: each new attribute takes the place of
 * the first attribute named in its `replaces` list (or its own old place), else goes last.
 * Attributes named in `drop` are removed.
 */
function editAttrs(n: XNode, set: Array<{ name: string; value: string; replaces?: string[] }>, drop: string[] = []): void {
  const old = attrMap(n) ?? {};
  const out: XAttrs = {};
  const placed = new Set<string>();
  const dropKeys = new Set(drop.map((d) => AT + d));
  for (const [k, v] of Object.entries(old)) {
    const hit = set.find((s) => AT + s.name === k || (s.replaces ?? []).some((r) => AT + r === k));
    if (hit !== undefined && !placed.has(hit.name)) {
      out[AT + hit.name] = escapeXml(hit.value);
      placed.add(hit.name);
      continue;
    }
    if (hit !== undefined || dropKeys.has(k)) continue;
    out[k] = v;
  }
  for (const s of set) if (!placed.has(s.name)) out[AT + s.name] = escapeXml(s.value);
  if (Object.keys(out).length > 0) n[ATTRS] = out;
  else delete n[ATTRS];
}

function isBlankText(n: XNode | undefined): boolean {
  if (n === undefined || tagOf(n) !== TEXT) return false;
  const t = n[TEXT];
  return typeof t === 'string' && t.trim() === '';
}

/** Remove `child` from `parent`, with the indentation in front of it. */
function removeChild(parent: XNode, child: XNode): void {
  const list = kids(parent);
  const i = list.indexOf(child);
  if (i < 0) return;
  if (i > 0 && isBlankText(list[i - 1])) list.splice(i - 1, 2);
  else list.splice(i, 1);
}

/** Replace the text content of element `n` by `text` (raw-escaped here). */
function setText(n: XNode, text: string): void {
  n[tagOf(n)] = [{ [TEXT]: escapeXml(text) }];
}

function textOf(n: XNode): string {
  return decodeXmlEntities(
    kids(n)
      .filter((k) => tagOf(k) === TEXT)
      .map((k) => String(k[TEXT]))
      .join(''),
  );
}

/** Parse a whole document; throws `Invalid domain XML: ...` unless it is well-formed with a `<domain>` root. */
function parseDocument(xml: string): { nodes: XNode[]; domain: XNode } {
  const valid = XMLValidator.validate(xml);
  if (valid !== true) {
    const { msg, line } = valid.err;
    throw new Error(`Invalid domain XML: ${msg} (line ${line})`);
  }
  const nodes = (PARSER.parse(xml) as XNode[]).filter((n) => !isBlankText(n));
  const roots = nodes.filter(isElement);
  if (roots.length !== 1 || tagOf(roots[0]!) !== 'domain') {
    throw new Error('Invalid domain XML: expected a single <domain> root element');
  }
  return { nodes, domain: roots[0]! };
}

/** Serialise the top-level nodes, keeping the whitespace before the first and after the last. */
function buildDocument(original: string, nodes: XNode[]): string {
  const lead = /^\s*/.exec(original)?.[0] ?? '';
  const trail = /\s*$/.exec(original)?.[0] ?? '';
  return lead + nodes.map((n) => BUILDER.build([n]) as string).join('\n') + trail;
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

/** A plain file name: no separator, not `.`/`..`, no NUL. */
function isPlainName(s: string): boolean {
  return s !== '' && s !== '.' && s !== '..' && !s.includes('/') && !s.includes('\0');
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
