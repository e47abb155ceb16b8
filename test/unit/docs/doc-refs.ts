/**
 * Cross-references from the source tree into docs/: `FORMAT.md §2.5`, `BEHAVIOUR.md §11.2`,
 * `CLI.md §1.2`, `plugin/PROTOCOL.md`, `ARCHITECTURE.md "The plugin shim and its Node worker"`,
 * bare `§3.5` (meaning the document named last before it in the same file), defect ids `D26`,
 * `D1z` and performance ids `P3`. Every one must land on a heading, a quoted heading title or an
 * id row of the matching document in docs/ (or, for a reference with a folder, on that file).
 */
import { readdirSync, readFileSync, existsSync, statSync } from 'node:fs';
import { join, relative, extname } from 'node:path';

export const DOC_NAMES = ['FORMAT', 'BEHAVIOUR', 'CLI', 'ARCHITECTURE', 'PROTOCOL', 'CHAIN'] as const;

/** What one document offers as targets. */
export interface DocIndex {
  /** Section numbers of its headings: `2`, `2.5`, `11.2`. */
  sections: Set<string>;
  /** Heading texts (for quoted titles). */
  titles: string[];
  /** Ids of table rows that start with an id: `D1`, `D1z`, `P9`. */
  ids: Set<string>;
  /** Section numbers or ids that occur more than once (a reference to them would be ambiguous). */
  duplicates: string[];
}

export interface Reference {
  file: string;
  line: number;
  /** As written, e.g. `FORMAT.md §6.3–6.4`, `§9`, `D36`. */
  text: string;
  /** Document it points into (undefined for a bare § without any document named before it). */
  doc?: string;
  /** Bare §: the other documents named before it in the same file (any of them may be meant). */
  alternatives?: string[];
  /** Folder given in front of the document name (`plugin/` in `plugin/PROTOCOL.md`). */
  folder?: string;
  sections: string[];
  title?: string;
  id?: string;
}

const HEADING = /^#{1,6}\s+(?:§\s*)?(\d+(?:\.\d+)*)\.?(?:\s|$)/;
const ID_ROW = /^\|\s*((?:D|P)\d+[a-z]?)\s*\|/;

export function indexDoc(text: string): DocIndex {
  const sections = new Set<string>();
  const titles: string[] = [];
  const ids = new Set<string>();
  const duplicates: string[] = [];
  let fence = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('```')) fence = !fence;
    if (fence) continue;
    if (/^#{1,6}\s/.test(line)) {
      titles.push(line.replace(/^#+\s+/, ''));
      const m = HEADING.exec(line);
      if (m) {
        if (sections.has(m[1])) duplicates.push(`§${m[1]}`);
        sections.add(m[1]);
      }
    }
    const id = ID_ROW.exec(line);
    if (id) {
      if (ids.has(id[1])) duplicates.push(id[1]);
      ids.add(id[1]);
    }
  }
  return { sections, titles, ids, duplicates };
}

export function indexDocs(docsDir: string): Map<string, DocIndex> {
  const out = new Map<string, DocIndex>();
  for (const name of DOC_NAMES) {
    const p = join(docsDir, `${name}.md`);
    if (existsSync(p)) out.set(name, indexDoc(readFileSync(p, 'utf8')));
  }
  return out;
}

// `plugin/PROTOCOL.md`, `FORMAT.md §6.3–6.4`, `ARCHITECTURE.md "Title"`, a bare `§9`, `D1z`, `P3`
const SEC = String.raw`\d+(?:\.\d+)*`;
const TOKEN = new RegExp(
  [
    String.raw`(?<folder>(?:[\w.-]+/)*)(?<doc>${DOC_NAMES.join('|')})\.md(?:(?: ?§ ?(?<sec>${SEC})(?:[–-]§?(?<sec2>${SEC}))?)|(?:,? "(?<title>[^"]+)"))?`,
    String.raw`§ ?(?<bare>${SEC})(?:[–-]§?(?<bare2>${SEC}))?`,
    String.raw`\b(?<id>[DP]\d+[a-z]?)\b`,
  ].join('|'),
  'g',
);

/** The second end of a range `6.3–6.4` or `6.5–6.8`; `6.1–2` would mean 6.1–6.2 but is not used. */
const rangeEnd = (a: string, b: string | undefined) => (b === undefined ? [a] : [a, b]);

/**
 * The references of one text file. A bare `§N` means a document named before it in the file —
 * the last one, or failing that any earlier one (comments often cite two documents and then
 * continue with bare numbers). Inside a document of docs/ (`selfDoc`) a bare `§N` means that
 * document itself unless another one was named earlier on the same line.
 */
export function referencesIn(file: string, text: string, selfDoc?: string): Reference[] {
  const out: Reference[] = [];
  const named: string[] = [];
  text.split('\n').forEach((lineText, i) => {
    let lineDoc: string | undefined;
    for (const m of lineText.matchAll(TOKEN)) {
      const g = m.groups ?? {};
      const base = { file, line: i + 1, text: m[0].trim() };
      if (g.doc) {
        lineDoc = g.doc;
        if (named[named.length - 1] !== g.doc) named.push(g.doc);
        out.push({
          ...base,
          doc: g.doc,
          folder: g.folder || undefined,
          sections: g.sec ? rangeEnd(g.sec, g.sec2) : [],
          title: g.title,
        });
      } else if (g.bare) {
        const sections = rangeEnd(g.bare, g.bare2);
        if (selfDoc !== undefined) out.push({ ...base, doc: lineDoc ?? selfDoc, sections });
        else out.push({ ...base, doc: named[named.length - 1], alternatives: [...new Set(named)], sections });
      } else if (g.id) {
        out.push({ ...base, doc: 'BEHAVIOUR', sections: [], id: g.id });
      }
    }
  });
  return out;
}

const TEXT_EXT = new Set(['.ts', '.js', '.mjs', '.c', '.h', '.cc', '.cpp', '.sh', '.md', '.gyp', '.json']);

/** Every text source file under the given folders, or the given files (fixtures and generated output excluded). */
export function sourceFiles(root: string, folders: readonly string[]): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      const rel = relative(root, p);
      if (e.isDirectory()) {
        if (['node_modules', 'dist', 'build', 'fixtures'].includes(e.name)) continue;
        walk(p);
      } else if (e.isFile() && TEXT_EXT.has(extname(e.name))) out.push(rel);
    }
  };
  for (const f of folders) {
    const p = join(root, f);
    if (!existsSync(p)) continue;
    if (statSync(p).isDirectory()) walk(p);
    else out.push(f);
  }
  return out.sort();
}

/** Why a reference does not resolve, or undefined when it does. */
export function unresolved(ref: Reference, docs: Map<string, DocIndex>, root: string): string | undefined {
  if (ref.folder !== undefined) {
    const target = join(root, ref.folder, `${ref.doc}.md`);
    if (!existsSync(target)) return `${ref.folder}${ref.doc}.md does not exist`;
    if (ref.folder !== 'docs/') return `${ref.folder}${ref.doc}.md: the specs live in docs/`;
  }
  if (ref.doc === undefined) {
    // a bare § with no document named before it: it must at least exist somewhere
    const any = [...docs.values()].some((d) => ref.sections.every((s) => d.sections.has(s)));
    return any ? undefined : `no document of docs/ has section §${ref.sections.join('–§')}`;
  }
  const d = docs.get(ref.doc);
  if (!d) return `docs/${ref.doc}.md does not exist`;
  if (ref.alternatives !== undefined && !ref.sections.every((s) => d.sections.has(s))) {
    const other = ref.alternatives.find((a) => ref.sections.every((s) => docs.get(a)?.sections.has(s)));
    if (other !== undefined) return undefined;
  }
  if (ref.id !== undefined) return d.ids.has(ref.id) ? undefined : `docs/${ref.doc}.md has no row for ${ref.id}`;
  for (const s of ref.sections) if (!d.sections.has(s)) return `docs/${ref.doc}.md has no section §${s}`;
  if (ref.title !== undefined && !d.titles.some((t) => t.includes(ref.title!)))
    return `docs/${ref.doc}.md has no heading "${ref.title}"`;
  return undefined;
}

/** All references under `folders` of `root` and the ones that do not resolve. */
export function checkReferences(root: string, folders: readonly string[]): { refs: Reference[]; broken: string[] } {
  const docs = indexDocs(join(root, 'docs'));
  const refs: Reference[] = [];
  for (const f of sourceFiles(root, folders)) refs.push(...referencesIn(f, readFileSync(join(root, f), 'utf8')));
  // the documents' references to each other and to themselves
  for (const name of DOC_NAMES) {
    const f = join('docs', `${name}.md`);
    if (existsSync(join(root, f))) refs.push(...referencesIn(f, readFileSync(join(root, f), 'utf8'), name));
  }
  const broken: string[] = [];
  for (const r of refs) {
    const why = unresolved(r, docs, root);
    if (why) broken.push(`${r.file}:${r.line}: ${r.text}: ${why}`);
  }
  return { refs, broken };
}
