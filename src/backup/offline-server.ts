/**
 * NBD servers for shut-off domains (BEHAVIOUR.md §4.2): one read-only qemu-nbd per disk on
 * `<socketfile>.<dev>`, exporting the parent checkpoint's bitmap for offline inc/diff. Every
 * server we start is stopped again (SIGTERM, pid file and socket removed), also on errors and
 * signals (D6).
 */
import { readFile, rm } from 'node:fs/promises';
import { execa } from 'execa';
import type { Logger } from '../log/logger.js';
import type { BackupDisk } from './types.js';
import { sleep } from '../util/sleep.js';

export interface OfflineServer {
  dev: string;
  socket: string;
  uri: string;
  pid: number;
  stop(): Promise<void>;
}

export async function startOfflineServer(disk: BackupDisk, socketFile: string, bitmap: string | undefined, log: Logger): Promise<OfflineServer> {
  const socket = `${socketFile}.${disk.dev}`;
  const pidFile = `${socket}.pid`;
  await rm(socket, { force: true });
  await rm(pidFile, { force: true });
  const args = ['-r', `--format=${disk.format}`, '-x', disk.dev, disk.path, '-k', socket, '-t', '-e', '2', '--fork', '--detect-zeroes=on', `--pid-file=${pidFile}`];
  if (bitmap !== undefined) args.push(`--bitmap=${bitmap}`);
  try {
    await execa('qemu-nbd', args, { stdin: 'ignore' });
  } catch (e) {
    // qemu-nbd may have bound its socket before it gave up (e.g. a missing bitmap)
    await rm(socket, { force: true });
    await rm(pidFile, { force: true });
    const stderr = (e as { stderr?: string }).stderr ?? '';
    const hint =
      bitmap !== undefined && /bitmap/i.test(stderr)
        ? ` The bitmap [${bitmap}] of the parent checkpoint is missing in ${disk.path}: start the domain (or use -S, start paused) to let the backup fall back to a full, or run a full backup.`
        : '';
    throw new Error(`Unable to start qemu-nbd for disk [${disk.dev}]: ${stderr.trim() || (e as Error).message}.${hint}`);
  }
  const pid = Number((await readFile(pidFile, 'utf8')).trim());
  if (!Number.isSafeInteger(pid) || pid <= 0) throw new Error(`qemu-nbd wrote no valid pid to ${pidFile}`);
  log.info(`Started qemu-nbd for disk [${disk.dev}] on socket [${socket}], pid [${pid}]`);
  let stopped = false;
  return {
    dev: disk.dev,
    socket,
    uri: `nbd+unix:///${disk.dev}?socket=${socket}`,
    pid,
    async stop(): Promise<void> {
      if (stopped) return;
      stopped = true;
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
      for (let i = 0; i < 50; i++) {
        try {
          process.kill(pid, 0);
        } catch {
          break;
        }
        await sleep(100);
      }
      await rm(pidFile, { force: true });
      await rm(socket, { force: true });
    },
  };
}
