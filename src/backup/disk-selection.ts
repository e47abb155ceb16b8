/**
 * Which disks of a domain are backed up (BEHAVIOUR.md §6.1, rules 1–14, in that order), and the
 * emulated-TPM notice of §1 step 18.
 *
 * Warnings and errors are exactly those §6.1 names; they count towards the exit status (errors
 * make the run exit 1 even when the other disks are fine, warnings trigger `--strict`). INFO
 * lines (include filter, optical drives) do not count. Effective rules only (D14): qcow2 images
 * on block devices are backed up, raw block devices need `--raw`.
 */
import type { Logger } from '../log/logger.js';
import type { BackupDisk } from './types.js';
import type { DomainConfig, DomainDisk } from '../xml/domain-types.js';
import { errorMessage } from '../util/error-message.js';

export interface DiskSelectionOptions {
  /** `-i/--include`: back up only this disk. */
  include?: string;
  /** `-x/--exclude`, already split at commas. */
  exclude?: string[];
  /** `--raw`: include raw-format disks and direct attached luns. */
  raw: boolean;
  /**
   * virConnectGetLibVersion of the libvirt in use; the README hint of rule 13 is left out when it
   * is ≤ 1010000, as the original does. Unknown (undefined) → the hint is given.
   */
  libvirtVersion?: number;
}

export interface DiskSelection {
  disks: BackupDisk[];
  /** ERROR records logged by the selection (each also went through log.error). */
  errors: number;
}

/** Resolves a `type='volume'` disk to the volume's path (storage pool lookup); rejects on failure. */
export type VolumeResolver = (pool: string, volume: string) => Promise<string>;

/** Rule 13: where to read how to change a disk's configuration so it can be backed up incrementally. */
export const RAW_DISK_README_HINT =
  'See the README (section "Raw disks and direct attached luns") on how to change the disk configuration ' +
  '(qcow2 format) so that the disk supports changed block tracking, or use option --raw for full and copy backups.';

const rawWarning = (dev: string) => `Raw disk [${dev}] excluded by default, use option --raw to include.`;
const lunWarning = (dev: string) => `Skipping direct attached lun [${dev}], use option --raw to include.`;

/**
 * Apply §6.1 to the disks of `cfg` in document order. Never throws for a single disk: problems
 * are logged (and counted in `errors` when they are ERRORs) and the disk is skipped.
 */
export async function selectDisks(
  cfg: DomainConfig,
  opts: DiskSelectionOptions,
  log: Logger,
  resolveVolume?: VolumeResolver,
): Promise<DiskSelection> {
  const disks: BackupDisk[] = [];
  let errors = 0;
  const error = (msg: string): void => {
    errors++;
    log.error(msg);
  };
  const exclude = new Set(opts.exclude ?? []);
  const hint = opts.libvirtVersion === undefined || opts.libvirtVersion > 1010000;

  for (const disk of cfg.disks) {
    // 1: dev, device, format, discard are read by parseDomainXml
    const { dev, device, format } = disk;
    if (dev === '') {
      error('Disk without target device in the domain XML, skipping it.');
      continue;
    }
    // 2
    if (exclude.has(dev)) {
      log.warn(`Excluding disk [${dev}] from backup as requested`);
      continue;
    }
    // 3
    if (opts.include !== undefined && dev !== opts.include) {
      log.info(`Skipping disk: [${dev}] as requested: does not match disk [${opts.include}]`);
      continue;
    }
    // 4
    if (device === 'cdrom' || device === 'floppy') {
      log.info(`Skipping attached [${device}] device: [${dev}].`);
      continue;
    }
    // 5–9
    let path: string;
    switch (disk.type) {
      case 'volume': {
        if (!disk.volume) {
          error(`Unable to detect disk source for disk [${dev}]: volume disk without pool or volume name`);
          continue;
        }
        const { pool, volume } = disk.volume;
        if (!resolveVolume) {
          error(`Unable to resolve storage volume [${volume}] in pool [${pool}] of disk [${dev}]: no storage pool lookup available`);
          continue;
        }
        try {
          path = await resolveVolume(pool, volume);
        } catch (e) {
          error(`Failed to detect path of storage volume [${volume}] in pool [${pool}] of disk [${dev}]: [${errorMessage(e)}]`);
          continue;
        }
        break;
      }
      case 'file':
        path = disk.path;
        break;
      case 'block':
        if (format === 'raw' && !opts.raw) {
          log.warn(rawWarning(dev));
          continue;
        }
        path = disk.path;
        break;
      case 'network':
        error(`Unsupported network disk type for disk [${dev}]`);
        continue;
      default:
        error(`Unsupported disk type [${disk.type}] for disk [${dev}]`);
        continue;
    }
    // 10
    if (!path) {
      error(`Unable to detect disk source for disk [${dev}]`);
      continue;
    }
    // 11–13
    if (!opts.raw && (device === 'lun' || format === 'raw')) {
      log.warn(device === 'lun' ? lunWarning(dev) : rawWarning(dev));
      if (hint) log.warn(RAW_DISK_README_HINT);
      continue;
    }
    // 14
    disks.push(keep(disk, path));
  }
  return { disks, errors };
}

function keep(disk: DomainDisk, path: string): BackupDisk {
  return { ...disk, backingChain: [...disk.backingChain], path, qcow: disk.format.startsWith('qcow') };
}

/** §1 step 18 / §10.4: the two warnings for an emulated TPM, whose state is not backed up. */
export function warnTpm(cfg: DomainConfig, log: Logger): void {
  if (!cfg.tpmEmulated) return;
  log.warn('Emulated TPM device attached: User action required.');
  log.warn(`Please manually backup contents of: [/var/lib/libvirt/swtpm/${cfg.uuid}/]`);
}
