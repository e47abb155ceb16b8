/**
 * The backup point a restore selects and the side files that belong to it (BEHAVIOUR.md §11.3,
 * §11.5, §11.8; FORMAT.md §6.1): the disk's chain (newest point, `--until`, or `--sequence`), the
 * ident of every point on it, and the `vmconfig.<ident>.xml` / `<dev>.<ident>.qcow.json` of the
 * selected point — or, when that one is missing, of the newest earlier point of the same chain.
 *
 * The ident of a point is the checkpoint name for full and inc files (and fallback fulls),
 * `copy` for a copy, and the name's ident (Unix time) for diffs and offline incs. Side files are
 * found in one directory listing by their name patterns; metadata never builds a path.
 */
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { chainFromDir, chainFromFiles, discoverBackupDir, ChainError, type Chain, type ChainFile } from './index.js';
import { roleOf } from './order.js';
import { parseQcowJsonName, parseVmconfigName } from './names.js';

/** No usable vmconfig for the selected point (`No domain config file found`, exit 1). */
export class NoVmconfigError extends Error {
  constructor(dir: string) {
    super(`No domain config file found in [${dir}]`);
    this.name = 'NoVmconfigError';
  }
}

/** The ident of the point a data file makes (FORMAT.md §6.1). */
export function pointIdent(f: ChainFile): string {
  if (f.level === 'copy') return 'copy';
  if (roleOf(f) === 'noncreating' && f.ident !== undefined) return f.ident;
  if (f.level === 'full') return f.metadata.checkpointName;
  return f.ident ?? f.metadata.checkpointName;
}

/** Idents of the points of a chain, the selected (newest) first, each once. */
export function chainIdents(chain: Chain): string[] {
  const out: string[] = [];
  for (let i = chain.files.length - 1; i >= 0; i--) {
    const id = pointIdent(chain.files[i]);
    if (!out.includes(id)) out.push(id);
  }
  return out;
}

/** A side file found for a point. */
export interface SideFile {
  /** Absolute path. */
  path: string;
  /** The ident in its name. */
  ident: string;
  /** false when it belongs to an earlier point than the selected one (fallback). */
  exact: boolean;
}

export interface SelectedPoint {
  dev: string;
  chain: Chain;
  /** Ident of the selected point (the last file of the chain). */
  ident: string;
  /** Idents of the chain's points, selected first, then newest earlier first: the fallback order for side files. */
  idents: string[];
  vmconfig?: SideFile;
  qcowJson?: SideFile;
}

/** The first of `idents` for which `names` has a file. */
function pick(names: Map<string, string>, idents: readonly string[], dir: string): SideFile | undefined {
  for (let i = 0; i < idents.length; i++) {
    const name = names.get(idents[i]);
    if (name !== undefined) return { path: join(dir, name), ident: idents[i], exact: i === 0 };
  }
  return undefined;
}

/** vmconfig and qcow.json of a chain from one listing of `dir`. */
export function sideFilesOf(dir: string, dev: string, idents: readonly string[]): { vmconfig?: SideFile; qcowJson?: SideFile } {
  const abs = resolve(dir);
  const vmconfigs = new Map<string, string>();
  const qcows = new Map<string, string>();
  for (const e of readdirSync(abs, { withFileTypes: true })) {
    if (!e.isFile()) continue;
    const v = parseVmconfigName(e.name);
    if (v !== undefined) vmconfigs.set(v, e.name);
    const q = parseQcowJsonName(e.name);
    if (q !== undefined && q.dev === dev) qcows.set(q.ident, e.name);
  }
  return { vmconfig: pick(vmconfigs, idents, abs), qcowJson: pick(qcows, idents, abs) };
}

/** The chain of `dev` from an explicit `--sequence` (names relative to `input`). */
export function sequenceOf(input: string, sequence: readonly string[], dev: string | undefined, until?: string): Chain {
  if (sequence.length === 0) throw new ChainError('empty --sequence');
  const chain = chainFromFiles(sequence.map((n) => resolve(input, n)), until);
  if (dev !== undefined && chain.dev !== dev) {
    throw new ChainError(`${chain.files[0].name}: belongs to disk [${chain.dev}], not [${dev}]`);
  }
  return chain;
}

/**
 * Select the point of disk `dev` (newest, `until`, or the given `sequence`) and find its
 * vmconfig and qcow.json. Without `dev`, the first disk of the set (by name) on which `until`
 * exists is used — enough to pick the vmconfig before the disk list is known.
 */
export function selectPointFiles(input: string, dev?: string, until?: string, opts: { sequence?: readonly string[] } = {}): SelectedPoint {
  let chain: Chain;
  if (opts.sequence !== undefined) chain = sequenceOf(input, opts.sequence, dev, until);
  else if (dev !== undefined) chain = chainFromDir(input, { disk: dev, until });
  else {
    const set = discoverBackupDir(input);
    const devs = [...set.disks.keys()].sort();
    if (devs.length === 0) throw new ChainError(`No data files found in directory: [${input}]`);
    let first: unknown;
    let found: Chain | undefined;
    for (const d of devs) {
      try {
        found = chainFromDir(input, { disk: d, until });
        break;
      } catch (e) {
        first ??= e;
      }
    }
    if (!found) throw first;
    chain = found;
  }
  const idents = chainIdents(chain);
  return { dev: chain.dev, chain, ident: idents[0], idents, ...sideFilesOf(input, chain.dev, idents) };
}

/** The vmconfig of a selected point, or NoVmconfigError. */
export function requireVmconfig(p: SelectedPoint, input: string): SideFile {
  if (!p.vmconfig) throw new NoVmconfigError(input);
  return p.vmconfig;
}
