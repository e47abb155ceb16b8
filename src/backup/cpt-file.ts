/**
 * `<domain>.cpt`, the chain's list of checkpoint names, oldest first (BEHAVIOUR.md §3.2,
 * FORMAT.md §6.3): reading with validation, and atomic writing in the byte format of Python's
 * `json.dumps(list)` (`["virtnbdbackup.0", "virtnbdbackup.1"]`, `", "` separators, no newline).
 *
 * Every entry must be one of our checkpoint names (`virtnbdbackup.<N>`, D21) and appear once:
 * neither tool writes anything else, and the names are later used in file names and libvirt
 * XML, so anything else is reported as an invalid checkpoint file instead of being used.
 */
import { readFile } from 'node:fs/promises';
import { pyJsonDumps } from '../saveset/pyjson.js';
import { writeFileAtomic } from '../util/atomic-file.js';

/** A user-facing checkpoint failure: the message is logged as ERROR (or CRITICAL) and the run exits 1. */
export class CheckpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointError';
  }
}

const OURS_RE = /^virtnbdbackup\.([0-9]+)$/;

/** True for the names of our checkpoints: exactly `virtnbdbackup.<digits>` (D21); every other name is foreign. */
export function isOurCheckpoint(name: string): boolean {
  return OURS_RE.test(name);
}

/** N of `virtnbdbackup.N`; undefined for names that are not ours. */
export function ourCheckpointNumber(name: string): number | undefined {
  const m = OURS_RE.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** Why `names` cannot be a checkpoint list; undefined when it can. */
function invalidReason(names: unknown): string | undefined {
  if (!Array.isArray(names)) return `expected a JSON array of checkpoint names, found ${names === null ? 'null' : typeof names}`;
  const seen = new Set<string>();
  for (let i = 0; i < names.length; i++) {
    const n: unknown = names[i];
    if (typeof n !== 'string') return `entry ${i} is not a string`;
    if (!isOurCheckpoint(n)) return `entry ${i} (${JSON.stringify(n)}) is not a checkpoint name of the form virtnbdbackup.<N>`;
    if (seen.has(n)) return `entry ${i} (${n}) is listed twice`;
    seen.add(n);
  }
  return undefined;
}

/** The message of a Node.js error, with the path added when the message does not name it. */
function reasonOf(e: unknown, path: string): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.includes(path) ? msg : `${path}: ${msg}`;
}

/**
 * Reads `<domain>.cpt`. Missing → `[]`. Unreadable → CheckpointError
 * `Failed to read checkpoint file: [<reason>]`; not JSON, not an array of strings, or an entry
 * that is not one of our checkpoint names or is listed twice → `Invalid checkpoint file: [<reason>]`.
 * Reasons name the file.
 */
export async function readCptFile(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new CheckpointError(`Failed to read checkpoint file: [${reasonOf(e, path)}]`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`Invalid checkpoint file: [${path}: ${(e as Error).message}]`);
  }
  const bad = invalidReason(value);
  if (bad !== undefined) throw new CheckpointError(`Invalid checkpoint file: [${path}: ${bad}]`);
  return value as string[];
}

/** The exact bytes of a `.cpt` file holding `names` (FORMAT.md §6.3). */
export function formatCptFile(names: readonly string[]): string {
  const bad = invalidReason(names);
  if (bad !== undefined) throw new TypeError(`not a checkpoint list: ${bad}`);
  return pyJsonDumps(names);
}

/**
 * Replaces `<domain>.cpt` atomically (temporary file in the same directory, fsync, rename,
 * directory fsync). A write failure → CheckpointError `Extending checkpoint file failed: [<reason>]`
 * (the original's message for this step, BEHAVIOUR.md §1 step 28).
 */
export async function writeCptFile(path: string, names: readonly string[]): Promise<void> {
  const content = formatCptFile(names);
  try {
    await writeFileAtomic(path, content, { replace: true });
  } catch (e) {
    throw new CheckpointError(`Extending checkpoint file failed: [${reasonOf(e, path)}]`);
  }
}
