/**
 * Reads what the backup needs from a libvirt domain XML (BEHAVIOUR.md §1 step 18, §6.1, §7.3):
 * name, uuid, every `devices/disk` in document order, the boot files of `os/`, an emulated TPM,
 * and the `incremental-backup` qemu capability.
 *
 * fast-xml-parser is used with entity processing off and our own decoding of the five XML
 * entities and numeric character references (its default decoder leaves `&#65;`-style
 * references as they are). The qemu capability is matched by namespace URI, whatever prefix
 * the document binds it to (declared on the root or on the element itself).
 */
import { XMLValidator } from 'fast-xml-parser';
import { makeXmlParser } from './parser.js';
import type { BootFiles, DomainConfig, DomainDisk } from './domain-types.js';
import { guardedParse } from './parse-guard.js';

/** Namespace of libvirt's qemu-specific domain XML extensions. */
export const QEMU_NS = 'http://libvirt.org/schemas/domain/qemu/1.0';

/** A parsed element: attributes under `@_name`, text under `#text`, children as arrays. */
interface XmlNode {
  [key: string]: XmlNode[] | string | undefined;
}

const NAMED_ENTITIES: Readonly<Record<string, string>> = { lt: '<', gt: '>', amp: '&', apos: "'", quot: '"' };

/** Decode the XML entities and character references of a raw attribute value or text. */
export function decodeXmlEntities(s: string): string {
  if (!s.includes('&')) return s;
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[A-Za-z]+);/g, (whole, ref: string) => {
    if (ref.startsWith('#')) {
      const cp = ref[1] === 'x' ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
      return cp <= 0x10ffff ? String.fromCodePoint(cp) : whole;
    }
    return NAMED_ENTITIES[ref] ?? whole;
  });
}

const parser = makeXmlParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  trimValues: true,
  alwaysCreateTextNode: true,
  isArray: (_name: string, _jpath: unknown, _leaf: boolean, isAttribute: boolean) => !isAttribute,
});

function children(node: XmlNode | undefined, name: string): XmlNode[] {
  const v = node?.[name];
  return Array.isArray(v) ? v : [];
}

function child(node: XmlNode | undefined, name: string): XmlNode | undefined {
  return children(node, name)[0];
}

function attr(node: XmlNode | undefined, name: string): string | undefined {
  const v = node?.[`@_${name}`];
  return typeof v === 'string' ? decodeXmlEntities(v) : undefined;
}

function text(node: XmlNode | undefined): string | undefined {
  const v = node?.['#text'];
  return typeof v === 'string' ? decodeXmlEntities(v) : undefined;
}

/** Namespace bindings in scope: prefix → URI, '' for the default namespace. */
type NsScope = ReadonlyMap<string, string>;

/** `scope` extended by the `xmlns` / `xmlns:p` declarations of `node`. */
function withDeclarations(scope: NsScope, node: XmlNode): NsScope {
  let out: Map<string, string> | undefined;
  for (const [k, v] of Object.entries(node)) {
    if (typeof v !== 'string' || (k !== '@_xmlns' && !k.startsWith('@_xmlns:'))) continue;
    out ??= new Map(scope);
    out.set(k === '@_xmlns' ? '' : k.slice('@_xmlns:'.length), decodeXmlEntities(v));
  }
  return out ?? scope;
}

/** Element children of `node` with namespace `uri` and local name `local`, each with its scope. */
function nsChildren(node: XmlNode, local: string, uri: string, scope: NsScope): { el: XmlNode; scope: NsScope }[] {
  const out: { el: XmlNode; scope: NsScope }[] = [];
  for (const [key, v] of Object.entries(node)) {
    if (!Array.isArray(v)) continue;
    const colon = key.indexOf(':');
    if ((colon < 0 ? key : key.slice(colon + 1)) !== local) continue;
    const prefix = colon < 0 ? '' : key.slice(0, colon);
    for (const el of v) {
      const elScope = withDeclarations(scope, el);
      if (elScope.get(prefix) === uri) out.push({ el, scope: elScope });
    }
  }
  return out;
}

function hasIncrementalBackupCapability(domain: XmlNode): boolean {
  const scope = withDeclarations(new Map(), domain);
  for (const caps of nsChildren(domain, 'capabilities', QEMU_NS, scope)) {
    for (const add of nsChildren(caps.el, 'add', QEMU_NS, caps.scope)) {
      if (attr(add.el, 'capability') === 'incremental-backup') return true;
    }
  }
  return false;
}

/** backingStore/source@file paths, outermost (the image's immediate backing file) first. */
function backingChain(disk: XmlNode): string[] {
  const out: string[] = [];
  let bs = child(disk, 'backingStore');
  for (let depth = 0; bs !== undefined && depth < 10000; depth++) {
    const file = attr(child(bs, 'source'), 'file');
    if (file) out.push(file);
    bs = child(bs, 'backingStore');
  }
  return out;
}

function parseDisk(disk: XmlNode): DomainDisk {
  const type = attr(disk, 'type') ?? 'file'; // libvirt's default disk type
  const source = child(disk, 'source');
  const driver = child(disk, 'driver');
  const d: DomainDisk = {
    dev: attr(child(disk, 'target'), 'dev') ?? '',
    device: attr(disk, 'device') ?? 'disk', // libvirt's default device
    type,
    format: attr(driver, 'type') ?? '',
    path: '',
    backingChain: backingChain(disk),
  };
  if (type === 'file') d.path = attr(source, 'file') ?? '';
  else if (type === 'block') d.path = attr(source, 'dev') ?? '';
  else if (type === 'volume') {
    const pool = attr(source, 'pool');
    const volume = attr(source, 'volume');
    if (pool !== undefined && volume !== undefined) d.volume = { pool, volume };
  }
  const discard = attr(driver, 'discard');
  if (discard !== undefined) d.discard = discard;
  const alias = attr(child(disk, 'alias'), 'name');
  if (alias !== undefined) d.alias = alias;
  return d;
}

function parseBootFiles(os: XmlNode | undefined): BootFiles {
  const boot: BootFiles = {};
  for (const key of ['loader', 'nvram', 'kernel', 'initrd'] as const) {
    const t = text(child(os, key));
    if (t) boot[key] = t;
  }
  return boot;
}

/**
 * Parse a domain XML. Throws an Error starting with `Invalid domain XML:` when the text is not
 * well-formed, has no single `<domain>` root, or the domain has no name.
 */
export function parseDomainXml(xml: string): DomainConfig {
  const valid = XMLValidator.validate(xml);
  if (valid !== true) {
    const { msg, line, col } = valid.err;
    throw new Error(`Invalid domain XML: ${msg} (line ${line}${col !== undefined ? `, column ${col}` : ''})`);
  }
  const doc = guardedParse(() => parser.parse(xml) as XmlNode, 'Invalid domain XML');
  const roots = Object.keys(doc).filter((k) => !k.startsWith('?') && k !== '#text');
  const domains = children(doc, 'domain');
  if (roots.length !== 1 || domains.length !== 1) {
    throw new Error(`Invalid domain XML: expected a single <domain> root element, found ${roots.length ? roots.map((r) => `<${r}>`).join(', ') : 'none'}`);
  }
  const domain = domains[0]!;
  const name = text(child(domain, 'name'));
  if (!name) throw new Error('Invalid domain XML: the domain has no <name>');
  const devices = child(domain, 'devices');
  return {
    name,
    uuid: text(child(domain, 'uuid')) ?? '',
    disks: children(devices, 'disk').map(parseDisk),
    bootFiles: parseBootFiles(child(domain, 'os')),
    tpmEmulated: children(devices, 'tpm').some((tpm) => children(tpm, 'backend').some((b) => attr(b, 'type') === 'emulator')),
    incrementalBackupCapability: hasIncrementalBackupCapability(domain),
  };
}
