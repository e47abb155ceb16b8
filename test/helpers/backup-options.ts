/** BackupOptions of a plain run (what the command line gives without options), for in-process backup tests. */
import { join } from 'node:path';
import type { BackupOptions } from '../../src/backup/run.js';

export interface PlainBackup {
  domain: string;
  level: BackupOptions['level'];
  output: string;
  /** Scratch files and the (unused) socket go here: a directory qemu can reach. */
  dir: string;
  uri: string;
}

export function plainBackupOptions(b: PlainBackup, over: Partial<BackupOptions> = {}): BackupOptions {
  return {
    domain: b.domain,
    level: b.level,
    type: 'stream',
    raw: false,
    output: b.output,
    scratchDir: b.dir,
    startDomain: false,
    pause: false,
    exclude: [],
    socketFile: join(b.dir, `unused.${Date.now()}.sock`),
    compress: false,
    freezeMountpoints: [],
    strict: false,
    noSparseDetection: false,
    uri: b.uri,
    useNbdinfo: false,
    startOnly: false,
    killOnly: false,
    printOnly: false,
    ...over,
  };
}
