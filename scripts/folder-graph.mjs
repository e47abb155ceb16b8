#!/usr/bin/env node
// Prints the dependency graph between the top-level folders of src/ and every
// cycle in it (of any length).
//
//   node scripts/folder-graph.mjs [root=src] [--files] [--json]
//
// --files lists, for each folder edge, the importing file and the module it
// imports, so a cycle can be traced to its lines. Exit code: 0 when the graph
// has no cycle, 1 when it has one, 2 on bad usage.
//
// Counted as an import: `import … from '…'`, `import type … from '…'`,
// `import '…'`, `export … from '…'` and dynamic `import('…')` with a literal
// relative specifier. Only relative specifiers can cross folders of src/, so
// package imports are ignored. Hand-written (a regex scan over ~150 files)
// rather than a dependency like madge: it needs no TypeScript resolver, and
// the folder-level view and cycle listing are what we want to see.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';

const IMPORT_RE =
  /(?:^|[\s;}])(?:import|export)\s+(?:type\s+)?(?:[\w*${}\s,]+?\s+from\s+)?['"](\.{1,2}\/[^'"]+)['"]|\bimport\s*\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g;

/** Strips comments so commented-out imports are not counted. */
function stripComments(src) {
  return src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`\\])\/\/.*$/gm, '$1');
}

function walk(dir, out) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (/\.(ts|mts|js|mjs)$/.test(name) && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/**
 * Builds the folder graph of `root`.
 * @returns {{ edges: Map<string, Map<string, {from: string, spec: string}[]>>, folders: string[] }}
 */
export function folderGraph(root) {
  const absRoot = resolve(root);
  const folderOf = (abs) => {
    const rel = relative(absRoot, abs);
    if (rel.startsWith('..')) return null; // outside root
    const parts = rel.split(sep);
    return parts.length > 1 ? parts[0] : '.';
  };
  const edges = new Map();
  const folders = new Set();
  for (const file of walk(absRoot, [])) {
    const a = folderOf(file);
    folders.add(a);
    const text = stripComments(readFileSync(file, 'utf8'));
    for (const m of text.matchAll(IMPORT_RE)) {
      const spec = m[1] ?? m[2];
      const b = folderOf(resolve(dirname(file), spec));
      if (b === null || b === a) continue;
      if (!edges.has(a)) edges.set(a, new Map());
      const to = edges.get(a);
      if (!to.has(b)) to.set(b, []);
      to.get(b).push({ from: relative(absRoot, file), spec });
    }
  }
  return { edges, folders: [...folders].sort() };
}

/** All elementary cycles (Johnson-style DFS; the graph has ~20 nodes). */
export function findCycles(edges) {
  const nodes = [...new Set([...edges.keys(), ...[...edges.values()].flatMap((m) => [...m.keys()])])].sort();
  const cycles = [];
  for (let i = 0; i < nodes.length; i++) {
    const start = nodes[i];
    const allowed = new Set(nodes.slice(i)); // each cycle reported once, from its smallest node
    const path = [start];
    const onPath = new Set(path);
    const dfs = (n) => {
      for (const next of [...(edges.get(n)?.keys() ?? [])].sort()) {
        if (next === start) cycles.push([...path, start]);
        else if (allowed.has(next) && !onPath.has(next)) {
          path.push(next);
          onPath.add(next);
          dfs(next);
          path.pop();
          onPath.delete(next);
        }
      }
    };
    dfs(start);
  }
  return cycles;
}

function main(argv) {
  const flags = argv.filter((a) => a.startsWith('--'));
  const args = argv.filter((a) => !a.startsWith('--'));
  const unknown = flags.filter((f) => f !== '--files' && f !== '--json' && f !== '--help');
  if (unknown.length > 0 || args.length > 1) {
    console.error(`usage: node scripts/folder-graph.mjs [root] [--files] [--json]`);
    return 2;
  }
  if (flags.includes('--help')) {
    console.log('usage: node scripts/folder-graph.mjs [root=src] [--files] [--json]\n' +
      'Prints the import graph between the top-level folders of root and its cycles; exit 1 if any cycle.');
    return 0;
  }
  const root = args[0] ?? 'src';
  const { edges } = folderGraph(root);
  const cycles = findCycles(edges);
  if (flags.includes('--json')) {
    const graph = Object.fromEntries([...edges].sort().map(([a, to]) => [a, [...to.keys()].sort()]));
    console.log(JSON.stringify({ graph, cycles }, null, 2));
    return cycles.length > 0 ? 1 : 0;
  }
  for (const [a, to] of [...edges].sort(([x], [y]) => x.localeCompare(y))) {
    console.log(`${a} -> ${[...to.keys()].sort().join(', ')}`);
    if (flags.includes('--files')) {
      for (const [b, uses] of [...to].sort(([x], [y]) => x.localeCompare(y))) {
        for (const u of uses) console.log(`    ${b}: ${u.from} imports ${u.spec}`);
      }
    }
  }
  console.log(cycles.length === 0 ? 'cycles: none' : `cycles (${cycles.length}):`);
  for (const c of cycles) console.log(`  ${c.join(' -> ')}`);
  return cycles.length > 0 ? 1 : 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  process.exitCode = main(process.argv.slice(2));
}
