/**
 * The hand-written part of each man page: what the command is for, exit codes, files, notes.
 * Options and examples are NOT repeated here: they come from src/cli/specs.ts (man-page.ts).
 * Facts follow docs/CLI.md and docs/BEHAVIOUR.md; keep them short and point there.
 */

export interface ManText {
  /** One line for NAME (default: the spec's description). */
  summary?: string;
  /** Paragraphs separated by blank lines. */
  description: string;
  /** [code, meaning] rows of EXIT STATUS. */
  exitStatus?: [string, string][];
  /** [path, meaning] rows of FILES. */
  files?: [string, string][];
  notes?: string;
  /** Extra SEE ALSO entries, e.g. `virsh(1)`. */
  seeAlso?: string[];
}

export const manText: Record<string, ManText> = {
  virtnbdbackup: {
    summary: 'back up libvirt/qemu virtual machines with changed block tracking',
    description: `virtnbdbackup backs up the disks of a libvirt domain into a directory (or, with -o -, into a zip
archive on standard output). It is a drop-in replacement for the virtnbdbackup 2.47 command of the
same name: options, abbreviations, file names, file formats and exit codes are the same, so existing
scripts keep working.

A running domain is backed up through a libvirt pull-mode backup job: qemu exports each disk over
NBD and only allocated data is read. Level full starts a chain and creates the checkpoint
virtnbdbackup.0; each level inc saves the blocks changed since the last checkpoint and creates the
next one; level diff saves the changes since the last checkpoint without creating one; level copy is
a self-contained image without checkpoints; level auto is full in an empty directory and inc
otherwise. A shut-off domain is read through qemu-nbd (a full becomes a copy unless -S starts the
domain paused).

Every data file is written as NAME.partial, synced and renamed when complete; the chain state
(DOMAIN.cpt and the checkpoint XML files) is written only after every disk completed, and an
interrupted run leaves the previous chain intact. Restore with virtnbdrestore(1); serve any point as
a block device with virtnbdmap(1); thin out old points with virtnbdprune(1).`,
    exitStatus: [
      ['0', 'Success; also -k succeeded, -s, -p, a threshold (-T) not reached, --help, --version.'],
      ['1', 'A fatal condition, or an error during the run (for example one disk failed while the others completed), or the run was interrupted by a signal (the backup job is aborted first).'],
      ['2', 'A usage error; or --strict was given and at least one warning (and no error) was logged.'],
    ],
    files: [
      ['OUTPUT/DEV.full.data, DEV.inc.virtnbdbackup.N.data, DEV.diff.UNIXTIME.data, DEV.copy.data', 'the data files, one per disk and run, each with a .chksum file (Adler-32).'],
      ['OUTPUT/DOMAIN.cpt, OUTPUT/checkpoints/', 'the checkpoint chain (in the current directory with -o -).'],
      ['OUTPUT/vmconfig.IDENT.xml, DEV.IDENT.qcow.json', 'domain definition and image options of each run, used by virtnbdrestore.'],
      ['OUTPUT/backup.LEVEL.TIMESTAMP.log', 'the log of each run.'],
      ['/var/tmp/virtnbdbackup.PID', 'default NBD socket of a running backup job (-f).'],
    ],
    notes: `Incrementals made by virtnbd record ranges the guest trimmed or zeroed as zero frames, so that
restores return zeros there. The original virtnbdrestore reads such sets correctly; the original
virtnbdmap does not: do not map virtnbd's sets with the original's virtnbdmap.`,
    seeAlso: ['virsh(1)', 'qemu-img(1)', 'qemu-nbd(8)'],
  },

  virtnbdrestore: {
    summary: 'restore, verify or dump backups made by virtnbdbackup',
    description: `virtnbdrestore turns a backup directory written by virtnbdbackup (virtnbd's or the original's) back
into disk images, checks it, or prints its metadata. It is a drop-in replacement for the
virtnbdrestore 2.47 command of the same name.

The data files of each disk are ordered from their names and metadata along the checkpoint chain,
never by file times, and resolved so that every byte is written once, from the newest file that
holds it. --until selects an older point; --sequence gives the files explicitly. Images are created
with qemu-img using the options saved at backup time, written as NAME.partial and renamed when
complete; an existing file is never overwritten.

-o verify checks every data file against its .chksum and checks its structure (headers, order,
trailer, every LZ4 checksum); -o dump prints the metadata of every data file as JSON on standard
output. -c adjusts the saved domain XML to the restored images and -D defines the domain.`,
    exitStatus: [
      ['0', 'The restore, dump or verify finished without error; also --help and --version.'],
      ['1', 'Any error: input missing, no data files, broken chain, target exists, a failure while writing a disk, a verify mismatch or damaged file, define or ssh failure.'],
      ['2', 'A usage error.'],
    ],
    files: [
      ['$HOME/virtnbdrestore.log', 'default log file (-L).'],
      ['OUTPUT/vmconfig.xml', 'the restored domain definition (-C).'],
    ],
    seeAlso: ['virsh(1)', 'qemu-img(1)'],
  },

  virtnbdmap: {
    summary: 'serve a backup chain as a block device or NBD export; boot or mount a backup point',
    description: `virtnbdmap serves one disk of a backup point, as written by virtnbdbackup, through nbdkit: the full
backup and its incrementals (with -f, or found in a backup directory with -i) are resolved once into
an extent map and served without replaying anything, so starting takes the same time for one file
or thirty. Compressed backups can be served too. Writes go to a temporary copy-on-write overlay; the
backup files are never modified. Where the kernel has NBD devices the export is connected to
/dev/nbdN with qemu-nbd; otherwise virtnbdmap keeps serving and prints the NBD URI to use.

It is a drop-in replacement for the virtnbdmap 2.47 command of the same name and adds instant
recovery: --boot starts a virtual machine straight from a backup point (and --migrate-to moves it
onto real storage while it runs), --mount mounts the file systems of a point read-only for
single-file restore. The command stays in the foreground; Ctrl-C or SIGTERM disconnects, stops and
cleans up.`,
    exitStatus: [
      ['0', 'The mapping (or boot, or mount) ended with Ctrl-C/SIGTERM and everything was cleaned up; a --verify boot passed; --help and --version.'],
      ['1', 'A refused input, nbdkit did not start, the device could not be connected, a chain error, or a --verify boot failed.'],
      ['2', 'A usage error.'],
    ],
    files: [['$HOME/virtnbdmap.log', 'default log file (-L).']],
    seeAlso: ['nbdkit(1)', 'qemu-nbd(8)', 'nbdfuse(1)'],
  },

  virtnbdprune: {
    summary: 'keep the newest points of a backup chain and merge older ones into a synthetic full',
    description: `virtnbdprune thins out a backup chain written by virtnbdbackup without taking a new full backup. It
keeps the newest points (--keep-last, --keep-within), writes the oldest kept point as a new full
backup of each disk, and removes the files of the merged points. It works on the directory alone:
neither libvirt nor the virtual machine is needed, and the next virtnbdbackup -l inc continues the
chain.

The new full is written as NAME.partial, synced and renamed before anything is removed, so an
interrupted prune leaves every listed point restorable, and the next run finishes it.`,
    exitStatus: [
      ['0', 'Done (or nothing to do); also --dry-run, --help and --version.'],
      ['1', 'An error; the directory is left restorable.'],
      ['2', 'A usage error.'],
    ],
    files: [['$HOME/virtnbdprune.log', 'default log file (-L).']],
  },
};
