/**
 * An NBD export as a regular file through `nbdfuse DIR/disk URI` (for machines without kernel
 * NBD devices). nbdfuse runs in the foreground under us; it is ready when DIR/disk exists with
 * the export's size. Stopped with `fusermount3 -u DIR` (nbdfuse then exits by itself), falling
 * back to a lazy unmount and signals.
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { isMountPoint } from './mounts.js';
import { sleep } from '../util/sleep.js';

export class NbdfuseError extends Error {}

export interface FuseFile {
  /** The file that shows the export (DIR/disk). */
  file: string;
  /** The FUSE mount point (DIR). */
  dir: string;
  pid: number;
  /** Resolves when nbdfuse exits. */
  exited: Promise<{ code: number | undefined; signal: string | undefined }>;
  /** Unmount and stop nbdfuse. Idempotent; throws when the FUSE mount could not be removed. */
  stop(): Promise<void>;
}

export interface NbdfuseOptions {
  /** Existing, empty directory to mount on. */
  dir: string;
  /** NBD URI of the export. */
  uri: string;
  /** Expected size of the export in bytes (readiness check). */
  size: number;
  readonly: boolean;
  timeoutMs?: number;
}

function sizeOf(path: string): number | undefined {
  try {
    return statSync(path).size;
  } catch {
    return undefined;
  }
}

async function fusermount(dir: string, lazy: boolean): Promise<{ ok: boolean; message: string }> {
  const r = await execa('fusermount3', ['-u', ...(lazy ? ['-z'] : []), dir], { reject: false, stdin: 'ignore' });
  return { ok: r.exitCode === 0, message: r.stderr.trim() || `exit ${r.exitCode}` };
}

/** Start nbdfuse and wait until the file is there with the expected size. */
export async function startNbdfuse(opts: NbdfuseOptions): Promise<FuseFile> {
  const file = join(opts.dir, 'disk');
  const child = execa('nbdfuse', [...(opts.readonly ? ['-r'] : []), file, opts.uri], {
    stdin: 'ignore',
    reject: false,
    // own process group: a Ctrl-C in the terminal must not stop nbdfuse under mounted file
    // systems; we unmount and stop it ourselves, in order
    detached: true,
    all: true,
  });
  const exited = child.then((r) => ({ code: r.exitCode, signal: r.signal }));
  let done = false;
  void exited.then(() => (done = true));
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    if (sizeOf(file) === opts.size) break;
    if (done) {
      const r = await child;
      throw new NbdfuseError(`nbdfuse exited (${r.exitCode ?? r.signal}) before exposing [${file}]: ${String(r.all ?? '').trim()}`);
    }
    if (Date.now() > deadline) {
      await fusermount(opts.dir, true);
      child.kill('SIGKILL');
      await exited;
      const got = sizeOf(file);
      throw new NbdfuseError(
        `nbdfuse did not expose [${file}] within ${opts.timeoutMs ?? 30_000} ms` + (got !== undefined ? ` (size ${got}, expected ${opts.size})` : ''),
      );
    }
    await sleep(20);
  }

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      let failure: string | undefined;
      const first = await fusermount(opts.dir, false);
      if (first.ok) {
        // nbdfuse leaves its main loop once unmounted
        const timer = setTimeout(() => child.kill('SIGTERM'), 5000);
        await exited;
        clearTimeout(timer);
      } else {
        // busy, or nbdfuse already gone (stale mount): detach lazily, then stop the process
        const lazy = await fusermount(opts.dir, true);
        if (!lazy.ok && isMountPoint(opts.dir)) failure = `Failed to unmount the nbdfuse mount [${opts.dir}]: ${first.message}; lazy: ${lazy.message}`;
        if (!done) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
          await exited;
          clearTimeout(timer);
        }
      }
      if (failure) throw new NbdfuseError(failure);
    })());
  return { file, dir: opts.dir, pid: child.pid ?? -1, exited, stop };
}
