/**
 * The domain XML of a VM booted from a backup (issue 5): the backed-up vmconfig, edited so that
 * it can run beside the original without touching anything of it.
 *
 *  - name: the given one; no `<uuid>` (libvirt makes a new one);
 *  - every backed-up disk becomes an NBD network disk (raw) on the unix socket of its export, or
 *    a qcow2 overlay file when one is given; its backing chain is dropped; other disk settings
 *    (target, bus, address, boot order, serial) stay;
 *  - disks that are not in the backup are removed (they would be the original's live images);
 *    cdrom and floppy drives stay but lose their media;
 *  - passthrough devices (`hostdev`, `redirdev`) are removed;
 *  - file-backed character devices (serial, console, parallel, channel) and their `<log>` files
 *    write to new files in the boot's own directory; unix-socket channels lose their path, so
 *    libvirt makes a new one; graphics get automatic ports;
 *  - kernel, initrd, loader and nvram point at the copies given in `bootFiles`.
 */
import { basename, join } from 'node:path';
import { attr, buildDocument, editAttrs, elements, first, kids, parseDocument, removeChild, setText, textOf, ATTRS, AT, TEXT, escapeXml, type XNode } from '../xml/domain-tree.js';

export type BootDiskSource =
  | { kind: 'nbd'; socket: string; exportName: string }
  | { kind: 'file'; path: string; format: 'qcow2' | 'raw' };

export interface BootConfigOptions {
  name: string;
  /** dev → what the disk is served from. Disks not listed are removed. */
  disks: ReadonlyMap<string, BootDiskSource>;
  /** Original path (os/kernel, …) → path to use. Paths not listed are left unchanged. */
  bootFiles: ReadonlyMap<string, string>;
  /** Directory for new console/serial log files. */
  runDir: string;
}

export interface BootConfigLog {
  info(msg: string): void;
  debug(msg: string): void;
}

const CHARDEVS = ['serial', 'console', 'parallel', 'channel'];

function el(tag: string, attrs: Record<string, string>, children: XNode[] = []): XNode {
  const a: Record<string, string> = {};
  for (const [k, v] of Object.entries(attrs)) a[AT + k] = escapeXml(v);
  return { [tag]: children, [ATTRS]: a };
}

/** Replace `old` in `parent` by `node` at the same place. */
function replaceChild(parent: XNode, old: XNode, node: XNode): void {
  const list = kids(parent);
  const i = list.indexOf(old);
  if (i >= 0) list[i] = node;
  else list.push(node);
}

function adjustDisk(disk: XNode, dev: string, src: BootDiskSource, log: BootConfigLog): void {
  for (const b of elements(disk, 'backingStore')) removeChild(disk, b);
  const oldDriver = first(disk, 'driver');
  const format = src.kind === 'nbd' ? 'raw' : src.format;
  const driver = el('driver', { name: 'qemu', type: format });
  if (oldDriver !== undefined) {
    // keep harmless tuning that does not depend on the image (discard, detect_zeroes)
    for (const k of ['discard', 'detect_zeroes']) {
      const v = attr(oldDriver, k);
      if (v !== undefined) (driver[ATTRS] as Record<string, string>)[AT + k] = escapeXml(v);
    }
    replaceChild(disk, oldDriver, driver);
  } else kids(disk).unshift(driver);
  const source =
    src.kind === 'nbd'
      ? el('source', { protocol: 'nbd', name: src.exportName }, [el('host', { transport: 'unix', socket: src.socket })])
      : el('source', { file: src.path });
  const oldSource = first(disk, 'source');
  if (oldSource !== undefined) replaceChild(disk, oldSource, source);
  else kids(disk).splice(kids(disk).indexOf(driver) + 1, 0, source);
  if (attr(disk, 'device') === 'lun') editAttrs(disk, [{ name: 'device', value: 'disk' }], ['sgio', 'rawio']);
  editAttrs(disk, [{ name: 'type', value: src.kind === 'nbd' ? 'network' : 'file' }]);
  for (const ro of elements(disk, 'readonly')) removeChild(disk, ro);
  log.info(`Disk [${dev}]: ${src.kind === 'nbd' ? `NBD export [${src.exportName}] on [${src.socket}]` : `image [${src.path}]`}`);
}

/** The boot domain's XML from the backed-up `vmconfig`. Throws `Invalid domain XML: …`. */
export function bootDomainXml(vmconfig: string, o: BootConfigOptions, log: BootConfigLog): { xml: string; consoleLogs: string[] } {
  const { nodes, domain } = parseDocument(vmconfig);
  // one new file per old file: a serial port and its console usually share one
  const logs = new Map<string, string>();
  const newLogPath = (kind: string, old: string): string => {
    let p = logs.get(old);
    if (p === undefined) {
      p = join(o.runDir, `${kind}${logs.size + 1}-${basename(old) || 'log'}`);
      logs.set(old, p);
      log.info(`${kind} output [${old}] goes to [${p}]`);
    }
    return p;
  };

  for (const devices of elements(domain, 'devices')) {
    for (const disk of elements(devices, 'disk')) {
      const dev = attr(first(disk, 'target'), 'dev') ?? '';
      const device = attr(disk, 'device') ?? 'disk';
      if (device === 'cdrom' || device === 'floppy') {
        const s = first(disk, 'source');
        if (s !== undefined) {
          removeChild(disk, s);
          log.info(`Removed the media of [${device}] drive [${dev}].`);
        }
        continue;
      }
      const src = o.disks.get(dev);
      if (src === undefined) {
        log.info(`Removing disk [${dev}]: it is not in the backup.`);
        removeChild(devices, disk);
        continue;
      }
      adjustDisk(disk, dev, src, log);
    }
    for (const tag of ['hostdev', 'redirdev']) {
      for (const d of elements(devices, tag)) {
        log.info(`Removing passthrough device <${tag}>: it cannot come along to a VM booted from a backup.`);
        removeChild(devices, d);
      }
    }
    for (const tag of CHARDEVS) {
      for (const c of elements(devices, tag)) {
        const type = attr(c, 'type');
        const source = first(c, 'source');
        if (type === 'file' && source !== undefined) {
          const old = attr(source, 'path') ?? '';
          if (old !== '') editAttrs(source, [{ name: 'path', value: newLogPath(tag, old) }]);
        } else if (type === 'unix' && source !== undefined && attr(source, 'path') !== undefined) {
          editAttrs(source, [], ['path']);
        }
        const logEl = first(c, 'log');
        const old = attr(logEl, 'file');
        if (logEl !== undefined && old !== undefined) editAttrs(logEl, [{ name: 'file', value: newLogPath(`${tag}-log`, old) }]);
      }
    }
    for (const g of elements(devices, 'graphics')) {
      if (attr(g, 'port') !== undefined || attr(g, 'autoport') === 'no') editAttrs(g, [{ name: 'autoport', value: 'yes' }], ['port', 'tlsPort', 'websocket']);
    }
  }

  const os = first(domain, 'os');
  if (os !== undefined) {
    for (const tag of ['kernel', 'initrd', 'loader', 'nvram']) {
      for (const e of elements(os, tag)) {
        const old = textOf(e).trim();
        const repl = o.bootFiles.get(old);
        if (repl !== undefined) {
          setText(e, repl);
          log.info(`Boot file [${old}] → [${repl}]`);
        }
      }
    }
  }

  for (const u of elements(domain, 'uuid')) removeChild(domain, u);
  const nameEl = first(domain, 'name');
  if (nameEl !== undefined) setText(nameEl, o.name);
  else kids(domain).unshift({ name: [{ [TEXT]: escapeXml(o.name) }] });
  return { xml: buildDocument(vmconfig, nodes), consoleLogs: [...logs.values()] };
}
