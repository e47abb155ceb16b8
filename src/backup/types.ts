/**
 * Shared types of the backup modules (src/backup/*): the levels and the disks selected for
 * backup (BEHAVIOUR.md §6.1). The domain model they build on lives in src/xml/domain-types.ts.
 */
import type { DomainDisk } from '../xml/domain-types.js';

/** Levels after `auto` was resolved (BEHAVIOUR.md §2). */
export type BackupLevel = 'copy' | 'full' | 'inc' | 'diff';
/** Levels as given on the command line. */
export type RequestedLevel = BackupLevel | 'auto';

/** A disk selected for backup (BEHAVIOUR.md §6.1 row 14). */
export interface BackupDisk extends DomainDisk {
  /** Image path to back up (volume disks resolved). */
  path: string;
  /** The format string starts with "qcow". */
  qcow: boolean;
}
