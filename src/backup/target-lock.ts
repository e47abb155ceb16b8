/**
 * One backup per target directory at a time (BEHAVIOUR.md §2.7 "Ours"): an exclusive flock(2) on
 * the target directory itself (zip mode: the current directory), through the native addon. The
 * kernel drops the lock when the process ends in any way, so a killed run never leaves a stale
 * lock behind, and no lock file appears in the backup directory.
 */
import { loadNative } from '../nbd/native.js';

interface FsLockAddon {
  lockPath(path: string): number;
  unlockFd(fd: number): void;
}

export class TargetBusyError extends Error {
  constructor(readonly dir: string) {
    super(`Another backup is running into target directory [${dir}] (it holds the directory lock); not starting a second one.`);
    this.name = 'TargetBusyError';
  }
}

export interface TargetLock {
  readonly dir: string;
  release(): void;
}

/** Takes the lock or throws TargetBusyError (another process has it) / Error (cannot open dir). */
export function lockTarget(dir: string): TargetLock {
  const addon = loadNative() as unknown as FsLockAddon;
  let fd: number;
  try {
    fd = addon.lockPath(dir);
  } catch (e) {
    if ((e as { code?: string }).code === 'EWOULDBLOCK') throw new TargetBusyError(dir);
    throw new Error(`Cannot lock target directory [${dir}]: ${(e as Error).message}`);
  }
  let held = true;
  return {
    dir,
    release(): void {
      if (!held) return;
      held = false;
      addon.unlockFd(fd);
    },
  };
}
