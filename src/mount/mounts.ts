/**
 * Mounting and unmounting file systems for `virtnbdmap --mount`: `mount -t TYPE -o OPTS DEV DIR`,
 * `umount DIR` retried with a short back-off while the target is busy, lazy `umount -l` as the
 * last resort, and a /proc/self/mountinfo reader (to check what is mounted under a directory).
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { execa } from 'execa';
import { sleep } from '../util/sleep.js';

export class MountError extends Error {}

/** `mount -t FSTYPE -o OPTIONS DEVICE DIR`. */
export async function mountFs(device: string, dir: string, fstype: string | null, options: string): Promise<void> {
  const args = [...(fstype ? ['-t', fstype] : []), '-o', options, device, dir];
  const r = await execa('mount', args, { reject: false, stdin: 'ignore' });
  if (r.exitCode !== 0)
    throw new MountError(`Failed to mount [${device}] (${fstype ?? 'auto'}, ${options}) on [${dir}]: ${(r.stderr || r.stdout).trim() || `exit ${r.exitCode}`}`);
}

export interface UnmountResult {
  /** true when only the lazy unmount (`umount -l`) succeeded. */
  lazy: boolean;
  attempts: number;
}

/**
 * `umount DIR`, retried while busy with delays `backoffMs` (doubling), then `umount -l`.
 * Throws when even the lazy unmount fails.
 */
export async function unmountWithRetry(dir: string, backoffMs = [100, 200, 400, 800, 1600]): Promise<UnmountResult> {
  let last = '';
  for (let i = 0; i <= backoffMs.length; i++) {
    const r = await execa('umount', [dir], { reject: false, stdin: 'ignore' });
    if (r.exitCode === 0) return { lazy: false, attempts: i + 1 };
    last = r.stderr.trim() || `exit ${r.exitCode}`;
    if (/not mounted|no mount point specified/i.test(last) && !isMountPoint(dir)) return { lazy: false, attempts: i + 1 };
    if (i < backoffMs.length) await sleep(backoffMs[i]);
  }
  const l = await execa('umount', ['-l', dir], { reject: false, stdin: 'ignore' });
  if (l.exitCode !== 0) throw new MountError(`Failed to unmount [${dir}]: ${last}; umount -l: ${l.stderr.trim()}`);
  return { lazy: true, attempts: backoffMs.length + 2 };
}

/** Decode the octal escapes (`\040` etc.) of a /proc/self/mountinfo field. */
export function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The mount points listed in mountinfo text (field 5), unescaped. */
export function parseMountinfo(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length >= 5) out.push(unescapeMountinfo(f[4]));
  }
  return out;
}

/** Mount points at or below `dir` (from /proc/self/mountinfo). */
export function mountsUnder(dir: string, mountinfo?: string): string[] {
  const base = resolve(dir);
  const text = mountinfo ?? readFileSync('/proc/self/mountinfo', 'utf8');
  return parseMountinfo(text).filter((m) => m === base || m.startsWith(base.endsWith('/') ? base : base + '/'));
}

export function isMountPoint(dir: string): boolean {
  return mountsUnder(dir).includes(resolve(dir));
}
