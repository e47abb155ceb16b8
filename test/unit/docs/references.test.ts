/**
 * Every reference the code makes to the specs (`FORMAT.md §2.5`, `BEHAVIOUR.md §11.2`, `CLI.md §1.2`,
 * `PROTOCOL.md`, `ARCHITECTURE.md`, bare `§N.M`, defect ids `D26`, performance ids `P3`) resolves to
 * a heading or id row of docs/, and the worked hex examples of docs/FORMAT.md are exactly what
 * `xxd` prints for the fixture files they name.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DOC_NAMES, checkReferences, indexDoc, indexDocs, referencesIn, sourceFiles, unresolved } from './doc-refs.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const FOLDERS = ['src', 'plugin', 'native', 'test', 'bench', 'scripts', 'fuzz', 'README.md'];

describe('references from the source tree into docs/', () => {
  const { refs, broken } = checkReferences(ROOT, FOLDERS);
  // this folder talks about references (examples, negative cases); it is not a user of them
  const own = (f: string) => f.startsWith(join('test', 'unit', 'docs'));
  const brokenOutside = broken.filter((b) => !own(b));

  test('the scan finds the references (a scan that finds nothing proves nothing)', () => {
    const counted = refs.filter((r) => !own(r.file));
    expect(counted.length).toBeGreaterThan(300);
    const kinds = new Set(counted.map((r) => (r.id ? r.id[0] : r.doc ?? 'bare')));
    for (const k of ['FORMAT', 'BEHAVIOUR', 'CLI', 'ARCHITECTURE', 'PROTOCOL', 'D', 'P']) expect(kinds).toContain(k);
  });

  test('every reference resolves to a heading or an id of docs/', () => {
    expect(brokenOutside).toEqual([]);
  });

  test('the specs exist once, in docs/ (no second PROTOCOL.md or FORMAT.md beside the code)', () => {
    const strays = sourceFiles(ROOT, FOLDERS).filter((f) => DOC_NAMES.some((d) => basename(f) === `${d}.md`));
    expect(strays).toEqual([]);
  });
});

test('the source paths docs/ names (`src/chain/order.ts`, `test/fixtures/…`) exist', () => {
  const missing: string[] = [];
  let named = 0;
  for (const name of DOC_NAMES) {
    const text = readFileSync(join(ROOT, 'docs', `${name}.md`), 'utf8');
    for (const m of text.matchAll(/`((?:src|test|plugin|native|bench|scripts|docs)\/[^`\s*]+)`/g)) {
      named++;
      if (!existsSync(join(ROOT, m[1]))) missing.push(`docs/${name}.md: ${m[1]}`);
    }
  }
  expect(named).toBeGreaterThan(20);
  expect(missing).toEqual([]);
});

describe('the resolver', () => {
  const docs = indexDocs(join(ROOT, 'docs'));
  const check = (text: string) => referencesIn('x.ts', text).map((r) => unresolved(r, docs, ROOT));

  test('finds the documents, sections, ranges, quoted titles and ids', () => {
    const refs = referencesIn('x.ts', 'see FORMAT.md §6.3–6.4 and §9, ARCHITECTURE.md "The chain resolver", D1z, P9');
    expect(refs.map((r) => [r.doc, r.sections, r.title, r.id])).toEqual([
      ['FORMAT', ['6.3', '6.4'], undefined, undefined],
      ['FORMAT', ['9'], undefined, undefined],
      ['ARCHITECTURE', [], 'The chain resolver', undefined],
      ['BEHAVIOUR', [], undefined, 'D1z'],
      ['BEHAVIOUR', [], undefined, 'P9'],
    ]);
    expect(check('FORMAT.md §6.3–6.4 and §9, ARCHITECTURE.md "The chain resolver", D1z, P9')).toEqual([
      undefined, undefined, undefined, undefined, undefined,
    ]);
  });

  test('reports what does not exist', () => {
    expect(check('FORMAT.md §99.1')[0]).toMatch(/no section §99.1/);
    expect(check('BEHAVIOUR.md §11.2 then §11.99')[1]).toMatch(/BEHAVIOUR.md has no section §11.99/);
    expect(check('D999')[0]).toMatch(/no row for D999/);
    expect(check('NOPE.md FORMAT.md "No such heading"')[0]).toMatch(/no heading/);
    expect(check('plugin/PROTOCOL.md')[0]).toMatch(/PROTOCOL.md/);
  });

  test('no document numbers two headings alike or lists an id twice', () => {
    const dup = [...docs].flatMap(([name, d]) => d.duplicates.map((x) => `${name}.md ${x}`));
    expect(dup).toEqual([]);
    expect(indexDoc('## 1. A\n## 1. B\n| D2 | x |\n| D2 | y |\n').duplicates).toEqual(['§1', 'D2']);
  });

  test('headings inside code blocks do not count', () => {
    const d = indexDoc('## 1. One\n```\n## 2. Two\n```\n| D5 | x |\n');
    expect([...d.sections]).toEqual(['1']);
    expect([...d.ids]).toEqual(['D5']);
  });
});

describe('docs/FORMAT.md worked hex examples', () => {
  const text = readFileSync(join(ROOT, 'docs', 'FORMAT.md'), 'utf8');
  // <!-- xxd [-s OFFSET -l LENGTH] FILE --> followed by a fenced block with xxd's output
  const blocks = [...text.matchAll(/<!-- xxd((?: -[sl] \d+)*) (\S+) -->\n```\n([\s\S]*?)```/g)];

  test('there are examples to check', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(2);
  });

  test.each(blocks.map((b) => [`${b[2]}${b[1]}`, b[1], b[2], b[3]]))('%s', (_name, args, file, shown) => {
    const argv = [...args.trim().split(/\s+/).filter((s) => s !== ''), join(ROOT, file)];
    expect(shown).toBe(execFileSync('xxd', argv, { encoding: 'utf8' }));
  });
});
