/**
 * Who owns a piece of run-time state (a backup job, a run directory of virtnbdmap/virtnbdrestore):
 * an owner record `{ pid, start, host }` written next to the state, so that a later run can tell
 * the leftovers of a process that died (SIGKILL, host crash of the process only) from the state of
 * a run that is still going. `start` is the process start time from /proc/<pid>/stat (field 22,
 * clock ticks since boot), so a recycled pid is not mistaken for the owner; `host` guards state
 * on shared storage.
 *
 * Records live in {@link runStateDir}: `/run/virtnbd` for root (tmpfs: emptied by a reboot, which
 * also ends every job and process the records could name), `$XDG_RUNTIME_DIR/virtnbd` or
 * `<tmpdir>/virtnbd-<uid>` otherwise.
 *
 * Hand-written: a pid file with a start time is a few lines; the npm pid-file packages either
 * lack the start-time check or lock files, which a killed process cannot release by itself here.
 */
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from './atomic-file.js';

export interface OwnerRecord {
  pid: number;
  /** /proc/<pid>/stat start time of the owner ('' where /proc is missing). */
  start: string;
  host: string;
  /** What the state is (free text for messages, e.g. "virtnbdmap --boot"). */
  what?: string;
  /** Anything the cleaner needs (socket paths, domain names, loop devices, …). */
  [key: string]: unknown;
}

/** Start time of a process (field 22 of /proc/<pid>/stat), undefined when it does not exist. */
export function procStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) may contain spaces and parentheses: count fields after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return rest[19]; // fields 3.. → index 0 is field 3, field 22 is index 19
}

export function selfOwner(what?: string, extra: Record<string, unknown> = {}): OwnerRecord {
  return { ...extra, pid: process.pid, start: procStartTime(process.pid) ?? '', host: hostname(), ...(what !== undefined ? { what } : {}) };
}

/** True while the process that wrote the record runs (same host, same pid, same start time). */
export function ownerAlive(r: OwnerRecord): boolean {
  if (r.host !== hostname()) return true; // another host's state: never ours to clean
  if (r.pid === process.pid && r.start === (procStartTime(process.pid) ?? '')) return true;
  const start = procStartTime(r.pid);
  if (start === undefined) return false;
  return r.start === '' || start === r.start;
}

/** The directory for records of this user (created 0700). */
export function runStateDir(sub?: string): string {
  const uid = process.getuid?.() ?? -1;
  const base = uid === 0 ? '/run/virtnbd' : process.env.XDG_RUNTIME_DIR ? join(process.env.XDG_RUNTIME_DIR, 'virtnbd') : join(tmpdir(), `virtnbd-${uid}`);
  const dir = sub !== undefined ? join(base, sub) : base;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

export async function writeOwnerFile(path: string, record: OwnerRecord): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(record)}\n`, { replace: true });
}

/** The record at `path`; undefined when missing or unreadable (a torn record is treated as absent). */
export function readOwnerFile(path: string): OwnerRecord | undefined {
  try {
    const v = JSON.parse(readFileSync(path, 'utf8')) as Partial<OwnerRecord>;
    if (typeof v.pid !== 'number' || !Number.isInteger(v.pid) || v.pid <= 0 || typeof v.start !== 'string' || typeof v.host !== 'string') return undefined;
    return v as OwnerRecord;
  } catch {
    return undefined;
  }
}

/** Record files (`*.json`) in a directory, with their parsed content. */
export function listOwnerFiles(dir: string): Array<{ path: string; record: OwnerRecord | undefined }> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((n) => n.endsWith('.json')).map((n) => ({ path: join(dir, n), record: readOwnerFile(join(dir, n)) }));
}
