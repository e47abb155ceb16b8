/**
 * Order the data files of one disk into a chain from names and metadata only (BEHAVIOUR.md §11.2,
 * D8): base → creating deltas along the checkpoint chain, non-creating deltas (diffs, offline incs)
 * right after the file that created their parent. Broken chains are refused with a message that
 * names what is missing.
 */
import { checkpointNumber } from './names.js';
import type { ChainFile } from './discover.js';

export type Role = 'base' | 'creating' | 'noncreating';

export class ChainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ChainError';
  }
}

export interface Chain {
  dev: string;
  /** Oldest first, base first. */
  files: ChainFile[];
  /** The newest checkpoint reached by the chain (undefined for a copy). */
  checkpoint?: string;
}

/** The role of a data file (BEHAVIOUR.md §11.2 table). */
export function roleOf(f: ChainFile): Role {
  const m = f.metadata;
  if (f.level === 'full' || f.level === 'copy') {
    if (m.incremental) throw new ChainError(`${f.name}: a ${f.level} file must not be marked incremental`);
    return 'base';
  }
  if (!m.incremental) {
    if (m.parentCheckpoint !== '') throw new ChainError(`${f.name}: not incremental but has parent [${m.parentCheckpoint}]`);
    return 'base'; // fallback full (D5)
  }
  if (m.parentCheckpoint === '') throw new ChainError(`${f.name}: incremental file without a parent checkpoint`);
  if (f.level === 'inc' && m.checkpointName !== m.parentCheckpoint) return 'creating';
  return 'noncreating';
}

/** The checkpoint a file creates, if any (copies create none). */
function created(f: ChainFile, role: Role): string | undefined {
  if (role === 'creating') return f.metadata.checkpointName;
  if (role === 'base' && f.level !== 'copy') return f.metadata.checkpointName;
  return undefined;
}

/** Sort key for non-creating deltas: Unix-time ident first, then metadata date. */
function timeKey(f: ChainFile): string {
  const unix = f.ident && /^[0-9]+$/.test(f.ident) ? f.ident.padStart(16, '0') : '~';
  return `${unix} ${f.metadata.date}`;
}

interface Graph {
  bases: ChainFile[];
  /** parent checkpoint → the creating delta that continues from it. */
  next: Map<string, ChainFile>;
  /** parent checkpoint → non-creating deltas attached to it, in time order. */
  attached: Map<string, ChainFile[]>;
}

function buildGraph(dev: string, files: readonly ChainFile[]): Graph {
  const bases: ChainFile[] = [];
  const next = new Map<string, ChainFile>();
  const attached = new Map<string, ChainFile[]>();
  for (const f of files) {
    if (f.dev !== dev) throw new ChainError(`${f.name}: belongs to disk [${f.dev}], not [${dev}]`);
    const role = roleOf(f);
    if (role === 'base') bases.push(f);
    else if (role === 'creating') {
      const other = next.get(f.metadata.parentCheckpoint);
      if (other)
        throw new ChainError(
          `conflicting files for disk [${dev}]: ${other.name} and ${f.name} both continue from checkpoint [${f.metadata.parentCheckpoint}]`,
        );
      next.set(f.metadata.parentCheckpoint, f);
    } else {
      const list = attached.get(f.metadata.parentCheckpoint) ?? [];
      list.push(f);
      attached.set(f.metadata.parentCheckpoint, list);
    }
  }
  for (const list of attached.values()) list.sort((a, b) => (timeKey(a) < timeKey(b) ? -1 : timeKey(a) > timeKey(b) ? 1 : 0));
  if (bases.length === 0) throw new ChainError(`no full or copy backup found for disk [${dev}]`);
  return { bases, next, attached };
}

/** Rank of a chain's base: the number of the checkpoint it created; copies rank lowest. */
export function baseRank(b: ChainFile): number {
  if (b.level === 'copy') return -1;
  return checkpointNumber(b.metadata.checkpointName) ?? -1;
}

/** Walk from a base along creating deltas; returns the files with the checkpoints they create. */
function walk(g: Graph, base: ChainFile): { file: ChainFile; creates?: string }[] {
  const steps: { file: ChainFile; creates?: string }[] = [];
  let cp = created(base, 'base');
  steps.push({ file: base, creates: cp });
  const seen = new Set<string>();
  while (cp !== undefined && !seen.has(cp)) {
    seen.add(cp);
    const d = g.next.get(cp);
    if (!d) break;
    cp = d.metadata.checkpointName;
    steps.push({ file: d, creates: cp });
  }
  return steps;
}

/** Every delta must hang off a checkpoint some base reaches; otherwise the set has a gap. */
function checkGaps(g: Graph): void {
  const reachable = new Set<string>();
  for (const b of g.bases) for (const s of walk(g, b)) if (s.creates) reachable.add(s.creates);
  const orphans: string[] = [];
  for (const [parent, d] of g.next) if (!reachable.has(parent)) orphans.push(`${d.name} (needs checkpoint [${parent}])`);
  for (const [parent, list] of g.attached)
    if (!reachable.has(parent)) for (const d of list) orphans.push(`${d.name} (needs checkpoint [${parent}])`);
  if (orphans.length)
    throw new ChainError(
      `broken chain: no file creates the checkpoint these files continue from: ${orphans.join(', ')}; ` +
        'the file that created it is missing or was replaced. Use --sequence to restore a chosen list of files.',
    );
}

/** Assemble base + creating deltas (+ attached non-creating deltas) up to step index `upTo`. */
function assemble(g: Graph, steps: { file: ChainFile; creates?: string }[], upTo: number, withLastAttached: boolean): ChainFile[] {
  const out: ChainFile[] = [];
  for (let i = 0; i <= upTo; i++) {
    out.push(steps[i].file);
    const cp = steps[i].creates;
    if (cp && (i < upTo || withLastAttached)) out.push(...(g.attached.get(cp) ?? []));
  }
  return out;
}

/** All points a user can select with --until for this disk (for error messages and listings). */
export function availablePoints(dev: string, files: readonly ChainFile[]): string[] {
  const g = buildGraph(dev, files);
  const out: string[] = [];
  for (const b of g.bases) for (const s of walk(g, b)) if (s.creates && !out.includes(s.creates)) out.push(s.creates);
  for (const list of g.attached.values()) for (const d of list) out.push(d.ident ?? d.name);
  return out;
}

/**
 * The chain of one disk for the newest point, or for `until`: a checkpoint name (the state when it
 * was created), a diff's/offline inc's ident, or a data file name (that file and what it needs).
 */
export function selectChain(dev: string, files: readonly ChainFile[], until?: string): Chain {
  const g = buildGraph(dev, files);
  checkGaps(g);
  const bases = [...g.bases].sort((a, b) => baseRank(b) - baseRank(a));
  if (until === undefined) {
    if (bases.length > 1 && baseRank(bases[0]) === baseRank(bases[1]))
      throw new ChainError(`disk [${dev}] has several base files (${bases.map((b) => b.name).join(', ')}): choose one with --sequence / -f`);
    const steps = walk(g, bases[0]);
    const last = steps.length - 1;
    return { dev, files: assemble(g, steps, last, true), checkpoint: steps[last].creates };
  }
  for (const base of bases) {
    const steps = walk(g, base);
    const byCp = steps.findIndex((s) => s.creates === until || s.file.name === until);
    if (byCp >= 0) return { dev, files: assemble(g, steps, byCp, false), checkpoint: steps[byCp].creates };
    for (let i = 0; i < steps.length; i++) {
      const cp = steps[i].creates;
      const list = cp ? g.attached.get(cp) ?? [] : [];
      const k = list.findIndex((d) => d.ident === until || d.name === until);
      if (k >= 0) return { dev, files: [...assemble(g, steps, i, false), ...list.slice(0, k + 1)], checkpoint: cp };
    }
  }
  throw new ChainError(
    `checkpoint or point [${until}] not found for disk [${dev}]; available: ${availablePoints(dev, files).join(', ') || 'none'}`,
  );
}

/**
 * An explicit list of files (`--sequence`, virtnbdmap `-f`), applied in the given order. The first
 * must be a base; all must belong to one disk; with `until`, stop after the file that created it.
 */
export function sequenceChain(files: readonly ChainFile[], until?: string): Chain {
  if (files.length === 0) throw new ChainError('empty file sequence');
  const dev = files[0].dev;
  if (roleOf(files[0]) !== 'base') throw new ChainError(`Sequence must start with full or copy backup. [${files[0].name}] is not one`);
  const out: ChainFile[] = [];
  let checkpoint: string | undefined;
  for (const f of files) {
    if (f.dev !== dev) throw new ChainError(`${f.name}: belongs to disk [${f.dev}], the sequence started with disk [${dev}]`);
    out.push(f);
    const role = roleOf(f);
    const cp = created(f, role);
    if (cp) checkpoint = cp;
    if (until !== undefined && (cp === until || f.name === until || f.ident === until)) return { dev, files: out, checkpoint };
  }
  if (until !== undefined) throw new ChainError(`checkpoint [${until}] is not created by any file of the sequence`);
  return { dev, files: out, checkpoint };
}
