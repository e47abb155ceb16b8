/**
 * Run directories with an owner (src/util/run-owner.ts): every temporary directory a command
 * works in (nbdkit's, the restore's, `--mount`'s, `--boot`'s overlays) holds `owner.json` with the
 * creating process and what else it set up outside the directory (a mount point, helper pids).
 * A run that dies by SIGKILL cannot clean up; the next run that creates a directory with the same
 * prefix sweeps the directories whose owner is gone: it ends their helper processes, lazily
 * unmounts what is mounted in them or on the recorded mount point, detaches loop devices backed
 * by files in them, and removes them — one warning per directory. Directories whose owner lives,
 * or without a readable owner record (being created, or not ours), are left alone.
 */
import { mkdtempSync, readFileSync, readdirSync, renameSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { execa } from 'execa';
import { ownerAlive, readOwnerFile, selfOwner, type OwnerRecord } from './run-owner.js';

const OWNER = 'owner.json';

function writeOwner(dir: string, rec: OwnerRecord): void {
  const tmp = join(dir, `.${OWNER}.tmp`);
  writeFileSync(tmp, `${JSON.stringify(rec)}\n`, { mode: 0o600 });
  renameSync(tmp, join(dir, OWNER));
}

/** Every prefix of run directories (a sweep looks at all of them: one command may clean after another). */
export function runDirPrefixes(): string[] {
  const t = tmpdir();
  return ['virtnbd-nbdkit-', 'virtnbd-restore-', 'virtnbd-mount-'].map((p) => join(t, p)).concat(['/var/tmp/virtnbd-boot-']);
}

/**
 * Creates `<prefix>XXXXXX` (mkdtemp) with this process's owner record; first sweeps the dead runs'
 * directories of every known prefix (`onSwept` gets a line for each).
 */
export async function createRunDir(prefix: string, what: string, extra: Record<string, unknown> = {}, onSwept?: (line: string) => void): Promise<string> {
  for (const p of new Set([prefix, ...runDirPrefixes()])) await sweepDeadRunDirs(p, onSwept);
  return createRunDirSync(prefix, what, extra);
}

/** The same without the sweep (for synchronous callers; the next createRunDir sweeps). */
export function createRunDirSync(prefix: string, what: string, extra: Record<string, unknown> = {}): string {
  const dir = mkdtempSync(prefix);
  writeOwner(dir, selfOwner(what, extra));
  return dir;
}

/** Adds facts to the directory's owner record (e.g. `{ pids: [nbdfuse] }`); arrays are appended to. */
export function noteInRunDir(dir: string, facts: Record<string, unknown>): void {
  const rec = readOwnerFile(join(dir, OWNER));
  if (rec === undefined) return;
  for (const [k, v] of Object.entries(facts)) {
    const old = rec[k];
    rec[k] = Array.isArray(old) && Array.isArray(v) ? [...(old as unknown[]), ...v] : v;
  }
  writeOwner(dir, rec);
}

function mountPoints(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.split(' ')[4]!.replace(/\\040/g, ' ').replace(/\\011/g, '\t').replace(/\\012/g, '\n').replace(/\\134/g, '\\'));
}

const under = (p: string, dir: string): boolean => p === dir || p.startsWith(`${dir}/`);

/**
 * Cleans one dead run's directory; returns what was done. Order matters: the file systems on the
 * recorded mount point first, then the loop devices backed by files in the directory (while
 * their backing path is still visible), the helper processes, whatever is mounted in the
 * directory (nbdfuse's FUSE mount), and the directory.
 */
async function sweepOne(dir: string, rec: OwnerRecord): Promise<string[]> {
  const done: string[] = [];
  const umountAll = async (root: string): Promise<void> => {
    for (const m of mountPoints().filter((x) => under(x, root)).sort((a, b) => b.length - a.length)) {
      const r = await execa('umount', ['-l', m], { reject: false });
      if (r.exitCode === 0) done.push(`unmounted ${m}`);
    }
  };
  const mp = typeof rec.mountpoint === 'string' ? rec.mountpoint : undefined;
  if (mp !== undefined) {
    await umountAll(mp);
    try {
      for (const n of readdirSync(mp).filter((x) => /^part[0-9]+$/.test(x))) rmdirSync(join(mp, n));
    } catch {
      /* not empty, or gone: left as it is */
    }
  }
  const lo = await execa('losetup', ['-J', '-l'], { reject: false });
  if (lo.exitCode === 0 && lo.stdout.trim() !== '') {
    for (const d of (JSON.parse(lo.stdout) as { loopdevices: Array<{ name: string; 'back-file': string | null }> }).loopdevices) {
      const bf = (d['back-file'] ?? '').replace(/ \(deleted\)$/, '');
      if (!under(bf, dir)) continue;
      const r = await execa('losetup', ['-d', d.name], { reject: false });
      if (r.exitCode === 0) done.push(`detached ${d.name}`);
    }
  }
  // helper processes (a FUSE server keeps its mount), only if they still work in `dir`
  for (const pid of Array.isArray(rec.pids) ? (rec.pids as unknown[]) : []) {
    if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 1) continue;
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) continue;
      process.kill(pid, 'SIGKILL');
      done.push(`ended pid ${pid}`);
    } catch {
      /* gone */
    }
  }
  await umountAll(dir);
  if (mountPoints().some((m) => under(m, dir))) return [...done, `left ${dir} (still mounted)`];
  rmSync(dir, { recursive: true, force: true });
  done.push(`removed ${dir}`);
  return done;
}

/** Sweeps every `<prefix>*` directory whose owner record names a process that is gone. */
export async function sweepDeadRunDirs(prefix: string, onSwept?: (line: string) => void): Promise<number> {
  const parent = dirname(prefix);
  const start = basename(prefix);
  let names: string[];
  try {
    names = readdirSync(parent).filter((n) => n.startsWith(start));
  } catch {
    return 0;
  }
  let swept = 0;
  for (const n of names) {
    const dir = join(parent, n);
    const rec = readOwnerFile(join(dir, OWNER));
    if (rec === undefined || ownerAlive(rec)) continue;
    const done = await sweepOne(dir, rec).catch((e: unknown) => [`failed: ${(e as Error).message}`]);
    swept++;
    onSwept?.(`Cleaned up after a dead ${rec.what ?? 'run'} (pid ${rec.pid}): ${done.join(', ')}`);
  }
  return swept;
}
