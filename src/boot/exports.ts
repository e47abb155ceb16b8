/**
 * One NBD export per disk of a backup point, for a VM booted from the backup: the disk's chain
 * is selected here, then resolved and served by nbdkit with our plugin (which validates every
 * file) on a unix socket in the boot's run directory. Writable exports go through nbdkit's cow
 * filter (writes land in a temporary overlay, the backup is never modified); read-only exports
 * serve qcow2 overlays kept by the user (--keep-overlays).
 */
import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import { chainFromSet, type BackupDir, type Chain } from '../chain/index.js';
import { startServer, type Server } from '../daemon/nbdkit.js';

export interface DiskExport {
  dev: string;
  chain: Chain;
  /** Virtual size of the disk at this point. */
  size: number;
  socket: string;
  exportName: string;
  server: Server;
}

export interface ExportOptions {
  /** The backup directory, discovered once by the caller. */
  set: BackupDir;
  until?: string;
  runDir: string;
  readonly: boolean;
  workers?: number;
  threads?: number;
  verbose?: boolean;
}

/** Start the exports of `devs`; on failure, the ones already started are stopped. */
export async function startDiskExports(devs: readonly string[], o: ExportOptions): Promise<DiskExport[]> {
  const chains = devs.map((dev) => chainFromSet(o.set, { disk: dev, until: o.until }));
  const out: DiskExport[] = [];
  try {
    for (const chain of chains) {
      const socket = join(o.runDir, `${chain.dev}.sock`);
      const server = await startServer({
        files: chain.files.map((f) => f.path),
        socket,
        exportName: chain.dev,
        readonly: o.readonly,
        workers: o.workers,
        threads: o.threads,
        verbose: o.verbose,
        logFile: join(o.runDir, `nbdkit-${chain.dev}.log`),
      });
      // the export's size is the newest file's virtual size (the plugin resolves the chain itself)
      out.push({ dev: chain.dev, chain, size: chain.files[chain.files.length - 1]!.metadata.virtualSize, socket, exportName: chain.dev, server });
      // qemu runs as another user (libvirt-qemu): it must be able to connect.
      chmodSync(socket, 0o777);
    }
  } catch (e) {
    await stopDiskExports(out);
    throw e;
  }
  return out;
}

export async function stopDiskExports(exports: readonly DiskExport[]): Promise<void> {
  await Promise.all(exports.map((x) => x.server.stop()));
}
