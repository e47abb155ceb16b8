/**
 * Shared types of the backup modules (src/backup/*): the levels, the disks of a domain as the
 * backup sees them (BEHAVIOUR.md §6.1), and the boot files of its configuration (§7.3).
 */

/** Levels after `auto` was resolved (BEHAVIOUR.md §2). */
export type BackupLevel = 'copy' | 'full' | 'inc' | 'diff';
/** Levels as given on the command line. */
export type RequestedLevel = BackupLevel | 'auto';

/** One `devices/disk` element of a domain XML, before selection. */
export interface DomainDisk {
  /** target@dev, e.g. "vda", "sda" */
  dev: string;
  /** disk@device: "disk", "lun", "cdrom", "floppy" */
  device: string;
  /** disk@type: "file", "block", "volume", "network", ... */
  type: string;
  /** driver@type, e.g. "qcow2", "raw"; "" when absent */
  format: string;
  /** source@file, source@dev; for type="volume" the pool/volume are in `volume` and path is "" */
  path: string;
  /** source@pool and source@volume of a volume disk */
  volume?: { pool: string; volume: string };
  /** driver@discard when set */
  discard?: string;
  /** Paths of backingStore/source@file, outermost first. */
  backingChain: string[];
  /** alias@name of the live XML (e.g. "virtio-disk0"), when present */
  alias?: string;
}

/** A disk selected for backup (BEHAVIOUR.md §6.1 row 14). */
export interface BackupDisk extends DomainDisk {
  /** Image path to back up (volume disks resolved). */
  path: string;
  /** The format string starts with "qcow". */
  qcow: boolean;
}

/** os/loader, os/nvram, os/kernel, os/initrd of a domain XML (absolute host paths). */
export interface BootFiles {
  loader?: string;
  nvram?: string;
  kernel?: string;
  initrd?: string;
}

/** What the backup needs from a domain XML. */
export interface DomainConfig {
  name: string;
  uuid: string;
  disks: DomainDisk[];
  bootFiles: BootFiles;
  /** devices/tpm/backend@type = 'emulator' */
  tpmEmulated: boolean;
  /** `<qemu:capabilities><qemu:add capability='incremental-backup'/>` present */
  incrementalBackupCapability: boolean;
}
