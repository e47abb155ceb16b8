/**
 * The prune journal, `virtnbdprune.journal` in the backup directory: the plan of a prune that has
 * started and not finished. Written atomically (temporary file, fsync, rename, directory fsync)
 * before the first change to the set and removed after the last one; a prune that finds it
 * finishes that plan first (src/prune/execute.ts). No reader of sets matches the name (FORMAT.md
 * §6.2), and the original's `*.data` globs do not either.
 *
 * Everything read back is validated: names must be plain data file / side file names of the
 * directory (no separators, no `..`), as anything else would be a path built from disk contents.
 */
import { readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { parseDataFileName } from '../chain/names.js';
import { syncDir, writeFileAtomic } from '../util/atomic-file.js';

export const JOURNAL_NAME = 'virtnbdprune.journal';
const VERSION = 1;

export interface JournalDisk {
  dev: string;
  /** Data file of the cut point, rewritten in place as the new base. */
  staging: string;
  /** `<dev>.full.data`. */
  final: string;
  /** Modification time given to the new base (the cut file's), so mtime order stays chain order. */
  mtimeMs: number;
  /** Files to remove, in order. */
  remove: string[];
}

export interface Journal {
  version: number;
  /** The checkpoint the new bases record. */
  cut: string;
  started: string;
  disks: JournalDisk[];
  sideFiles: string[];
}

export class JournalError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'JournalError';
  }
}

const PLAIN_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.+@:,=-]*$/;

function plainName(v: unknown, what: string): string {
  if (typeof v !== 'string' || !PLAIN_NAME.test(v) || v.length > 255 || v.includes('..')) throw new JournalError(`${what}: not a plain file name: ${JSON.stringify(v)}`);
  return v;
}

function dataName(v: unknown, what: string, dev: string): string {
  const n = plainName(v, what);
  const p = parseDataFileName(n);
  if (!p || p.dev !== dev) throw new JournalError(`${what}: not a data file of disk [${dev}]: ${n}`);
  return n;
}

/** Validate a parsed journal object. */
export function parseJournal(value: unknown, where: string): Journal {
  const o = value as Record<string, unknown> | null;
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new JournalError(`${where}: not a JSON object`);
  if (o.version !== VERSION) throw new JournalError(`${where}: unknown journal version ${JSON.stringify(o.version)}`);
  const cut = plainName(o.cut, `${where}: cut`);
  if (!Array.isArray(o.disks) || !Array.isArray(o.sideFiles)) throw new JournalError(`${where}: disks/sideFiles must be arrays`);
  const disks: JournalDisk[] = o.disks.map((d: unknown, i: number) => {
    const x = d as Record<string, unknown> | null;
    const w = `${where}: disks[${i}]`;
    if (typeof x !== 'object' || x === null) throw new JournalError(`${w}: not an object`);
    const dev = plainName(x.dev, `${w}.dev`);
    if (!/^[A-Za-z0-9_-]+$/.test(dev)) throw new JournalError(`${w}.dev: not a disk name: ${dev}`);
    const final = dataName(x.final, `${w}.final`, dev);
    if (final !== `${dev}.full.data`) throw new JournalError(`${w}.final: expected ${dev}.full.data`);
    if (typeof x.mtimeMs !== 'number' || !Number.isFinite(x.mtimeMs)) throw new JournalError(`${w}.mtimeMs: not a number`);
    if (!Array.isArray(x.remove)) throw new JournalError(`${w}.remove: not an array`);
    return {
      dev,
      staging: dataName(x.staging, `${w}.staging`, dev),
      final,
      mtimeMs: x.mtimeMs,
      remove: x.remove.map((r: unknown, k: number) => dataName(r, `${w}.remove[${k}]`, dev)),
    };
  });
  const sideFiles = o.sideFiles.map((s: unknown, k: number) => {
    const n = plainName(s, `${where}: sideFiles[${k}]`);
    if (parseDataFileName(n) || n.endsWith('.chksum') || n.endsWith('.cpt')) throw new JournalError(`${where}: sideFiles[${k}]: a data/checksum/cpt file: ${n}`);
    return n;
  });
  return { version: VERSION, cut, started: typeof o.started === 'string' ? o.started : '', disks, sideFiles };
}

/** The journal of `dir`, or undefined when no prune is pending. */
export async function readJournal(dir: string): Promise<Journal | undefined> {
  const path = join(dir, JOURNAL_NAME);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  if (text.length > 16 << 20) throw new JournalError(`${path}: larger than 16 MiB`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new JournalError(`${path}: not JSON: ${(e as Error).message}`);
  }
  return parseJournal(value, path);
}

export async function writeJournal(dir: string, j: Journal): Promise<void> {
  parseJournal(JSON.parse(JSON.stringify(j)), 'journal to write');
  await writeFileAtomic(join(dir, JOURNAL_NAME), `${JSON.stringify(j, null, 2)}\n`, { replace: false });
}

export async function removeJournal(dir: string): Promise<void> {
  await unlink(join(dir, JOURNAL_NAME));
  await syncDir(dir);
}
