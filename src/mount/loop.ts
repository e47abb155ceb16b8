/**
 * Loop devices for `virtnbdmap --mount`: one device per mounted area, set up with an explicit
 * offset and size limit (`losetup -f --show -o OFFSET --sizelimit SIZE`), so that no partition
 * scan and no udev-created partition nodes are needed. `listLoops` reads `losetup -J` (used to
 * check that nothing is left behind).
 */
import { execa } from 'execa';

export class LoopError extends Error {}

export interface LoopArea {
  offset: number;
  size: number;
  /** Read-only loop device (`-r`). */
  readonly: boolean;
}

/** Attach the first free loop device to `file` at `area`; returns its path (/dev/loopN). */
export async function attachLoop(file: string, area: LoopArea): Promise<string> {
  const args = ['-f', '--show', '-o', String(area.offset), '--sizelimit', String(area.size)];
  if (area.readonly) args.push('-r');
  const r = await execa('losetup', [...args, file], { reject: false, stdin: 'ignore' });
  const dev = r.stdout.trim();
  if (r.exitCode !== 0 || !dev.startsWith('/dev/'))
    throw new LoopError(`Failed to set up a loop device for [${file}] at offset ${area.offset}: ${(r.stderr || r.stdout).trim() || `exit ${r.exitCode}`}`);
  return dev;
}

/** `losetup -d DEVICE`. */
export async function detachLoop(device: string): Promise<void> {
  const r = await execa('losetup', ['-d', device], { reject: false, stdin: 'ignore' });
  if (r.exitCode !== 0) throw new LoopError(`Failed to detach loop device [${device}]: ${r.stderr.trim() || `exit ${r.exitCode}`}`);
}

export interface LoopInfo {
  name: string;
  backFile: string | null;
  offset: number;
  sizelimit: number;
  readonly: boolean;
}

/** Parse `losetup -J` output. */
export function parseLosetupJson(text: string): LoopInfo[] {
  if (text.trim() === '') return []; // losetup prints nothing when no device is in use
  const doc = JSON.parse(text) as unknown;
  const list = typeof doc === 'object' && doc !== null ? (doc as { loopdevices?: unknown }).loopdevices : undefined;
  if (!Array.isArray(list)) throw new LoopError('losetup -J output has no "loopdevices" list');
  return list.map((d: unknown) => {
    const o = (typeof d === 'object' && d !== null ? d : {}) as Record<string, unknown>;
    const num = (v: unknown): number => (typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : 0);
    return {
      name: typeof o.name === 'string' ? o.name : '',
      backFile: typeof o['back-file'] === 'string' ? o['back-file'] : null,
      offset: num(o.offset),
      sizelimit: num(o.sizelimit),
      readonly: o.ro === true || o.ro === '1' || o.ro === 1,
    };
  });
}

/** The loop devices in use (`losetup -J`). */
export async function listLoops(): Promise<LoopInfo[]> {
  const r = await execa('losetup', ['-J'], { reject: false, stdin: 'ignore' });
  if (r.exitCode !== 0) throw new LoopError(`losetup -J failed: ${r.stderr.trim()}`);
  return parseLosetupJson(r.stdout);
}
