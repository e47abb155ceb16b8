/**
 * The folders of src/ depend on each other without cycles (issue 14 point 2): each concept has one
 * home and imports only point down. Runs scripts/folder-graph.mjs, the same command a maintainer
 * runs (`node scripts/folder-graph.mjs --files`), and checks on planted trees that it sees every
 * import form and cycles of any length, so a clean result means something.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SCRIPT = join(ROOT, 'scripts', 'folder-graph.mjs');

interface GraphReport {
  graph: Record<string, string[]>;
  cycles: string[][];
}

/** Runs the script with --json; exit code 1 (cycles found) still yields the report. */
function graphOf(root: string): { code: number; report: GraphReport } {
  try {
    const out = execFileSync(process.execPath, [SCRIPT, root, '--json'], { encoding: 'utf8' });
    return { code: 0, report: JSON.parse(out) as GraphReport };
  } catch (e) {
    const err = e as { status?: number; stdout?: string };
    if (err.status === 1 && err.stdout) return { code: 1, report: JSON.parse(err.stdout) as GraphReport };
    throw e;
  }
}

function plant(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), `folder-graph-${process.pid}-`));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  return dir;
}

describe('folder graph of src/', () => {
  test('has no cycle of any length', () => {
    const { code, report } = graphOf(join(ROOT, 'src'));
    expect(report.cycles).toEqual([]);
    expect(code).toBe(0);
    // the scan saw the tree (a graph with no edges would trivially have no cycle)
    expect(Object.keys(report.graph).length).toBeGreaterThan(10);
    expect(report.graph.cli).toEqual(expect.arrayContaining(['backup', 'restore', 'map']));
  });

  // the layers of README "Architecture", from the commands down: a folder imports only folders below it
  const LAYERS = ['cli', 'devtools', 'prune', 'boot', 'mount', 'map', 'restore', 'backup', 'daemon', 'worker',
    'remote', 'virt', 'xml', 'chain', 'saveset', 'zip', 'nbd', 'log', 'util'];

  test('every import points down the layers of README "Architecture"', () => {
    const { report } = graphOf(join(ROOT, 'src'));
    const up: string[] = [];
    for (const [from, tos] of Object.entries(report.graph)) {
      for (const to of tos) {
        if (!LAYERS.includes(from) || !LAYERS.includes(to)) up.push(`${from} -> ${to}: folder not in LAYERS`);
        else if (LAYERS.indexOf(to) <= LAYERS.indexOf(from)) up.push(`${from} -> ${to}`);
      }
    }
    expect(up).toEqual([]);
  });
});

describe('scripts/folder-graph.mjs', () => {
  let dir = '';
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = '';
  });

  test('finds a three-folder cycle made of type-only, re-export and dynamic imports', () => {
    dir = plant({
      'a/one.ts': "import type { B } from '../b/two.js';\nexport type A = B;\n",
      'b/two.ts': "export { c } from '../c/three.js';\nexport type B = number;\n",
      'c/three.ts': "export const c = async () => (await import('../a/one.js')) as unknown;\n",
      'd/four.ts': "// import { x } from '../a/one.js';\nimport { c } from '../c/three.js';\nexport const d = c;\n",
    });
    const { code, report } = graphOf(dir);
    expect(report.graph).toEqual({ a: ['b'], b: ['c'], c: ['a'], d: ['c'] });
    expect(report.cycles).toEqual([['a', 'b', 'c', 'a']]);
    expect(code).toBe(1);
  });

  test('reports no cycle for a layered tree', () => {
    dir = plant({
      'low/x.ts': "import { join } from 'node:path';\nexport const x = join('a');\n",
      'mid/y.ts': "import { x } from '../low/x.js';\nimport './z.js';\nexport const y = x;\n",
      'mid/z.ts': 'export {};\n',
      'top/t.ts': "import { y } from '../mid/y.js';\nimport { x } from '../low/x.js';\nexport const t = [x, y];\n",
    });
    const { code, report } = graphOf(dir);
    expect(report.graph).toEqual({ mid: ['low'], top: ['low', 'mid'] });
    expect(report.cycles).toEqual([]);
    expect(code).toBe(0);
  });
});
