/**
 * Structural editing of libvirt domain XML that keeps everything it does not touch: fast-xml-parser's
 * order-preserving tree with entity processing off, so text, attribute values, entities, comments,
 * CDATA, namespaced elements and the whitespace between elements come back as they were (see
 * restore/adjust-config.ts for the exact guarantees). Used by restore (`-c`) and boot from backup.
 */
import { XMLBuilder, XMLValidator } from 'fast-xml-parser';
import { makeXmlParser } from './parser.js';
import { decodeXmlEntities } from './domain-xml.js';
import { guardedParse } from './parse-guard.js';

/** One node: `{ tag: children, ':@'?: attributes }`, `{ '#text': raw }`, `{ '#comment': [...] }`, ... */
export type XNode = Record<string, unknown>;
export type XAttrs = Record<string, string>;

export const ATTRS = ':@';
export const TEXT = '#text';
export const COMMENT = '#comment';
export const CDATA = '#cdata';
export const AT = '@_';

const PARSER = makeXmlParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: AT,
  allowBooleanAttributes: false,
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

export function tagOf(n: XNode): string {
  for (const k of Object.keys(n)) if (k !== ATTRS) return k;
  return '';
}

export function isElement(n: XNode): boolean {
  const t = tagOf(n);
  return t !== '' && t !== TEXT && t !== COMMENT && t !== CDATA && !t.startsWith('?');
}

export function kids(n: XNode): XNode[] {
  const v = n[tagOf(n)];
  return Array.isArray(v) ? (v as XNode[]) : [];
}

export function elements(n: XNode, tag: string): XNode[] {
  return kids(n).filter((k) => isElement(k) && tagOf(k) === tag);
}

export function first(n: XNode | undefined, tag: string): XNode | undefined {
  return n === undefined ? undefined : elements(n, tag)[0];
}

export function attrMap(n: XNode): XAttrs | undefined {
  const a = n[ATTRS];
  return typeof a === 'object' && a !== null ? (a as XAttrs) : undefined;
}

/** Decoded attribute value. */
export function attr(n: XNode | undefined, name: string): string | undefined {
  const v = n === undefined ? undefined : attrMap(n)?.[AT + name];
  return typeof v === 'string' ? decodeXmlEntities(v) : undefined;
}

/** Escape a value for raw storage in the tree (the builder adds the quote escapes). */
export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * Set attributes of `n`, keeping the order of the others: each new attribute takes the place of
 * the first attribute named in its `replaces` list (or its own old place), else goes last.
 * Attributes named in `drop` are removed.
 */
export function editAttrs(n: XNode, set: Array<{ name: string; value: string; replaces?: string[] }>, drop: string[] = []): void {
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

export function isBlankText(n: XNode | undefined): boolean {
  if (n === undefined || tagOf(n) !== TEXT) return false;
  const t = n[TEXT];
  return typeof t === 'string' && t.trim() === '';
}

/** Remove `child` from `parent`, with the indentation in front of it. */
export function removeChild(parent: XNode, child: XNode): void {
  const list = kids(parent);
  const i = list.indexOf(child);
  if (i < 0) return;
  if (i > 0 && isBlankText(list[i - 1])) list.splice(i - 1, 2);
  else list.splice(i, 1);
}

/** Replace the text content of element `n` by `text` (raw-escaped here). */
export function setText(n: XNode, text: string): void {
  n[tagOf(n)] = [{ [TEXT]: escapeXml(text) }];
}

export function textOf(n: XNode): string {
  return decodeXmlEntities(
    kids(n)
      .filter((k) => tagOf(k) === TEXT)
      .map((k) => String(k[TEXT]))
      .join(''),
  );
}

/** Parse a whole document; throws `Invalid domain XML: ...` unless it is well-formed with a `<domain>` root. */
export function parseDocument(xml: string): { nodes: XNode[]; domain: XNode } {
  const valid = XMLValidator.validate(xml);
  if (valid !== true) {
    const { msg, line } = valid.err;
    throw new Error(`Invalid domain XML: ${msg} (line ${line})`);
  }
  const nodes = guardedParse(() => PARSER.parse(xml) as XNode[], 'Invalid domain XML').filter((n) => !isBlankText(n));
  const roots = nodes.filter(isElement);
  if (roots.length !== 1 || tagOf(roots[0]!) !== 'domain') {
    throw new Error('Invalid domain XML: expected a single <domain> root element');
  }
  return { nodes, domain: roots[0]! };
}

/** Serialise the top-level nodes, keeping the whitespace before the first and after the last. */
export function buildDocument(original: string, nodes: XNode[]): string {
  const lead = /^\s*/.exec(original)?.[0] ?? '';
  const trail = /\s*$/.exec(original)?.[0] ?? '';
  return lead + nodes.map((n) => BUILDER.build([n]) as string).join('\n') + trail;
}

