/**
 * The domain model read from a libvirt domain XML (BEHAVIOUR.md §6.1, §7.3): its disks, its boot
 * files and what the backup needs to know about it. Parsed by src/xml/domain-xml.ts.
 */

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
