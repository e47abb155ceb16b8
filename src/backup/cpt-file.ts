/**
 * `<domain>.cpt`, the chain's list of checkpoint names, oldest first (BEHAVIOUR.md §3.2,
 * FORMAT.md §6.3): reading with validation, and atomic writing in the byte format of Python's
 * `json.dumps(list)` (`["virtnbdbackup.0", "virtnbdbackup.1"]`, `", "` separators, no newline).
 *
 * Every entry must be one of our checkpoint names (`virtnbdbackup.<N>`, D21) and appear once:
 * neither tool writes anything else, and the names are later used in file names and libvirt
 * XML, so anything else is reported as an invalid checkpoint file instead of being used.
 */
import { pyJsonDumps } from '../saveset/pyjson.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import { MAX_CPT_FILE, readTextCapped } from '../util/read-capped.js';

/** A user-facing checkpoint failure: the message is logged as ERROR (or CRITICAL) and the run exits 1. */
export class CheckpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointError';
  }
}

/**
 * Independent chains (`virtnbdbackup --chain NAME`, README "Retention"): the checkpoints of chain
 * NAME are `virtnbdbackup.NAME.<N>`; without --chain they are `virtnbdbackup.<N>` as in the
 * original. "Ours" below means: of the chain this run works on. Checkpoints of other chains are
 * neither ours (never deleted, listed or recovered) nor foreign (they do not stop a run).
 */
let prefix = 'virtnbdbackup';
let OURS_RE = /^virtnbdbackup\.([0-9]+)$/;
const ANY_CHAIN_RE = /^virtnbdbackup(?:\.[A-Za-z][A-Za-z0-9_-]{0,63})?\.[0-9]+$/;

/** Chain names accepted by --chain. */
export const CHAIN_NAME_RE = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;

/** Select the chain of this process (undefined: the original's names). Called once at the start of a run. */
export function setCheckpointChain(chain: string | undefined): void {
  if (chain !== undefined && !CHAIN_NAME_RE.test(chain)) throw new TypeError(`invalid chain name [${chain}]: a letter, then letters, digits, _ or -`);
  prefix = chain === undefined ? 'virtnbdbackup' : `virtnbdbackup.${chain}`;
  OURS_RE = new RegExp(`^${prefix.replace(/\./g, '\\.')}\\.([0-9]+)$`);
}

/** The name of checkpoint N of this process's chain (`virtnbdbackup.N`, or `virtnbdbackup.NAME.N`). */
export function checkpointNameOf(n: number): string {
  return `${prefix}.${n}`;
}

/** True for the names of our checkpoints: exactly `virtnbdbackup.<digits>` (D21), or those of our --chain; every other name is not ours. */
export function isOurCheckpoint(name: string): boolean {
  return OURS_RE.test(name);
}

/** True for a checkpoint of any chain of this tool (ours, or another --chain's): not foreign (§3.7). */
export function isAnyChainCheckpoint(name: string): boolean {
  return ANY_CHAIN_RE.test(name);
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
    if (!isOurCheckpoint(n)) return `entry ${i} (${JSON.stringify(n)}) is not a checkpoint name of the form ${checkpointNameOf(0).replace(/0$/, '<N>')}`;
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
    text = await readTextCapped(path, MAX_CPT_FILE);
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
