/**
 * Option specs of the three commands (CLI.md §2.1, §3.1, §4.1 and the extensions of §5).
 * Short letters differ between the commands (CLI.md §2.1, last table): options are defined per
 * command, only the remote group is shared. Extensions are marked `original: false` so that
 * they never change what an abbreviation of an original option means (CLI.md §1.2).
 */
import { userInfo } from 'node:os';
import { join } from 'node:path';
import type { CommandSpec, OptionSpec } from './argv.js';
import { packageVersion } from './version.js';

/** Process facts the defaults depend on (injectable for tests). */
export interface SpecEnv {
  /** Effective uid: 0 selects `qemu:///system` as the default URI. */
  euid: number;
  pid: number;
  /** `$HOME`, or undefined when unset. */
  home: string | undefined;
  /** Current user name (default of --ssh-user). */
  user: string | undefined;
}

export function currentSpecEnv(): SpecEnv {
  let user = process.env.LOGNAME || process.env.USER || process.env.LNAME || process.env.USERNAME || undefined;
  if (!user) {
    try {
      user = userInfo().username;
    } catch {
      user = undefined;
    }
  }
  return {
    euid: typeof process.geteuid === 'function' ? process.geteuid() : -1,
    pid: process.pid,
    home: process.env.HOME || undefined,
    user,
  };
}

const version = () => packageVersion();

const G_GENERAL = 'General options';
const G_REMOTE = 'Remote backup options';
const G_REMOTE_RESTORE = 'Remote restore options';
const G_LOGGING = 'Logging options';
const G_DEBUG = 'Debug options';
const G_EXT = 'Extensions';
const G_RECOVERY = 'Instant recovery (extensions)';
const G_VERIFY = 'Boot verification (extensions)';

const helpOpt = (group: string): OptionSpec => ({
  short: '-h', long: '--help', kind: 'flag', action: 'help', original: true, group,
  help: 'Show this help message and exit',
});
const versionOpt = (group: string): OptionSpec => ({
  short: '-V', long: '--version', kind: 'flag', action: 'version', original: true, group,
  help: 'Show version and exit',
});
const jsonOpt = (group: string, help: string): OptionSpec => ({
  long: '--json', kind: 'flag', original: false, group, help,
});

/** The remote group shared by virtnbdbackup and virtnbdrestore (CLI.md §2.1 "Remote"). */
function remoteOptions(env: SpecEnv, group: string): OptionSpec[] {
  return [
    {
      short: '-U', long: '--uri', kind: 'string', metavar: 'URI', original: true, group,
      default: env.euid === 0 ? 'qemu:///system' : 'qemu:///session',
      help: 'Libvirt connection URI; a URI containing qemu+ssh selects remote mode',
    },
    {
      long: '--user', kind: 'string', metavar: 'NAME', original: true, group,
      help: 'User to authenticate against libvirtd (SASL, together with --password)',
    },
    {
      long: '--password', kind: 'string', metavar: 'SECRET', original: true, group,
      help: 'Password to authenticate against libvirtd (visible to other users in ps: prefer --password-file or the environment variable VIRTNBD_PASSWORD)',
    },
    {
      long: '--password-file', kind: 'string', metavar: 'FILE', original: false, group,
      help: 'Read the libvirtd password from the first line of FILE (keeps it out of the command line)',
    },
    {
      long: '--ssh-user', kind: 'string', metavar: 'NAME', original: true, group,
      default: env.user, defaultText: env.user ?? 'the current user name',
      help: 'User to authenticate against the remote sshd (copy of files, remote qemu-nbd)',
    },
    {
      long: '--ssh-port', kind: 'int', metavar: 'N', original: true, group, default: 22,
      help: 'Port of the remote sshd',
    },
    {
      long: '--ssh-private-key', kind: 'string', metavar: 'FILE', original: true, group,
      defaultText: 'ssh agent / default keys',
      help: 'Private key for the ssh connection',
    },
    {
      short: '-P', long: '--nbd-port', kind: 'int', metavar: 'N', original: true, group, default: 10809,
      help: 'TCP port of the remote NBD server; should be unique for each running backup (offline disks use N, N+1, ...)',
    },
    {
      short: '-I', long: '--nbd-ip', kind: 'string', metavar: 'HOST', original: true, group, default: '',
      defaultText: 'the host name reported by the remote libvirtd',
      help: 'Address the remote NBD server binds to and we connect to (IPv6 literal allowed)',
    },
    {
      long: '--tls', kind: 'flag', original: true, group,
      help: 'Use TLS for the NBD connection (nbds://)',
    },
    {
      long: '--tls-cert', kind: 'string', metavar: 'DIR', original: true, group, default: '/etc/pki/qemu/',
      help: 'x509 certificate directory for the qemu-nbd servers we start (offline backup, restore)',
    },
  ];
}

const homeLog = (env: SpecEnv, name: string) => join(env.home ?? '/tmp', name);

// ------------------------------------------------------------------------------------------

export function virtnbdbackupSpec(env: SpecEnv = currentSpecEnv()): CommandSpec {
  const g = G_GENERAL;
  const options: OptionSpec[] = [
    { short: '-d', long: '--domain', kind: 'string', metavar: 'NAME', required: true, original: true, group: g,
      help: 'Domain to back up' },
    { short: '-l', long: '--level', kind: 'choice', choices: ['copy', 'full', 'inc', 'diff', 'auto'], default: 'copy',
      metavar: 'LEVEL', original: true, group: g,
      help: 'Backup level: copy (no checkpoint), full (start a chain), inc, diff, or auto (full if the target is empty, else inc)' },
    { short: '-t', long: '--type', kind: 'choice', choices: ['stream', 'raw'], default: 'stream', metavar: 'TYPE',
      original: true, group: g,
      help: 'Output type: thin sparse stream, or full-size raw image' },
    { short: '-r', long: '--raw', kind: 'flag', original: true, group: g,
      help: 'Also back up raw-format and direct-attached (block, lun) disks; they are saved as raw images' },
    { short: '-o', long: '--output', kind: 'string', metavar: 'DIR', required: true, original: true, group: g,
      help: "Target directory (created if missing); '-' writes a zip archive to stdout" },
    { short: '-C', long: '--checkpointdir', kind: 'string', metavar: 'DIR', defaultText: '<output>/checkpoints',
      original: true, group: g,
      help: 'Where checkpoint XML files are kept and read back' },
    { long: '--scratchdir', kind: 'string', metavar: 'DIR', default: '/var/tmp', original: true, group: g,
      help: 'Where qemu puts the fleecing scratch files of a running backup job' },
    { short: '-S', long: '--start-domain', kind: 'flag', original: true, group: g,
      help: 'Start a shut-off domain paused for the backup (destroyed again afterwards)' },
    { long: '--pause', kind: 'flag', original: true, group: g,
      help: 'Suspend the domain while the backup job is being started (ignored with -S)' },
    { short: '-i', long: '--include', kind: 'string', metavar: 'DEV', defaultText: 'all disks', original: true, group: g,
      help: 'Back up only the disk whose target equals DEV (e.g. sda)' },
    { short: '-x', long: '--exclude', kind: 'string', metavar: 'DEV[,DEV...]', original: true, group: g,
      help: 'Comma-separated disk targets to skip' },
    { short: '-f', long: '--socketfile', kind: 'string', metavar: 'PATH', default: `/var/tmp/virtnbdbackup.${env.pid}`,
      original: true, group: g,
      help: 'Unix socket of the NBD server; offline disks use PATH.<dev>' },
    { short: '-n', long: '--noprogress', kind: 'flag', original: true, group: g,
      help: 'Do not show progress bars' },
    { short: '-z', long: '--compress', kind: 'optionalInt', const: 2, metavar: 'LEVEL', defaultText: 'off; bare -z = 2',
      original: true, group: g,
      help: 'Compress the saved data with LZ4 at LEVEL: 0-2 fast mode, 3-12 LZ4-HC (higher is recorded as given, compressed as 12)' },
    { short: '-w', long: '--worker', kind: 'int', metavar: 'N', defaultText: 'number of disks', original: true, group: g,
      help: 'Number of disks backed up in parallel (< 1 → 1, more than disks → disks, zip output → 1)' },
    { short: '-F', long: '--freeze-mountpoint', kind: 'string', metavar: 'MP[,MP...]', defaultText: 'all',
      original: true, group: g,
      help: 'Comma-separated guest mount points to freeze via the guest agent' },
    { short: '-e', long: '--strict', kind: 'flag', original: true, group: g,
      help: 'Exit 2 when a warning was logged during the backup (and no error)' },
    { long: '--no-sparse-detection', kind: 'flag', original: true, group: g,
      help: 'inc/diff only: back up the whole dirty bitmap without checking it against the allocation' },
    { short: '-T', long: '--threshold', kind: 'int', metavar: 'BYTES', original: true, group: g,
      help: 'inc/diff only: skip the backup (exit 0) when the estimated change is below BYTES' },
    ...remoteOptions(env, G_REMOTE),
    { short: '-L', long: '--syslog', kind: 'flag', original: true, group: G_LOGGING,
      help: 'Also log to the local syslog socket (/dev/log)' },
    { long: '--quiet', kind: 'flag', original: true, group: G_LOGGING,
      help: 'No log output on stderr; implies --noprogress (the log file is still written)' },
    { long: '--nocolor', kind: 'flag', original: true, group: G_LOGGING,
      help: 'Plain, uncoloured log output on stderr' },
    { short: '-q', long: '--qemu', kind: 'flag', original: true, group: G_DEBUG,
      help: 'Query extents with nbdinfo --map instead of the built-in NBD client' },
    { short: '-s', long: '--startonly', kind: 'flag', original: true, group: G_DEBUG,
      help: 'Start the backup job, leave the NBD server running and exit' },
    { short: '-k', long: '--killonly', kind: 'flag', original: true, group: G_DEBUG,
      help: 'Abort a running backup job of the domain and exit (takes precedence over -s)' },
    { short: '-p', long: '--printonly', kind: 'flag', original: true, group: G_DEBUG,
      help: 'Print the estimated backup size and exit' },
    { short: '-v', long: '--verbose', kind: 'flag', original: true, group: G_DEBUG,
      help: 'Enable debug output' },
    versionOpt(G_DEBUG),
    helpOpt(G_DEBUG),
    jsonOpt(G_EXT, 'Print a JSON summary of the run on stdout (logs stay on stderr)'),
    { long: '--chain', kind: 'string', metavar: 'NAME', original: false, group: G_EXT,
      help: 'Independent chain NAME (a letter, then letters, digits, _ or -): its checkpoints are virtnbdbackup.NAME.<N>, so one VM can have several chains in different directories (e.g. daily and weekly), each with its own full/inc/diff/auto; a full of one chain never touches the checkpoints of another. Default: the original\'s names (virtnbdbackup.<N>)' },
  ];
  return {
    prog: 'virtnbdbackup',
    description: 'Back up libvirt/qemu virtual machines (full, incremental, differential, copy).',
    version,
    options,
    validate: (v) =>
      typeof v.chain === 'string' && !/^[A-Za-z][A-Za-z0-9_-]{0,63}$/.test(v.chain)
        ? `argument --chain: invalid chain name: '${v.chain}' (a letter, then up to 63 letters, digits, _ or -)`
        : undefined,
    epilog: `Examples:
  # start a chain
  virtnbdbackup -d vm1 -l full -o /backup/vm1
  # add an incremental
  virtnbdbackup -d vm1 -l inc -o /backup/vm1
  # full if the target is empty, else incremental
  virtnbdbackup -d vm1 -l auto -o /backup/vm1/2026-06
  # full-size raw images, no checkpoints
  virtnbdbackup -d vm1 -l copy -t raw -o /backup/vm1-raw
  # compressed zip archive to stdout
  virtnbdbackup -d vm1 -l full -z -o - > vm1.zip
  # remote host over ssh
  virtnbdbackup -U qemu+ssh://root@hv1/system --ssh-user root -d vm1 -l auto -o /backup/vm1
  # two independent chains of one VM: daily to local disk, weekly to another target
  virtnbdbackup -d vm1 -l auto -o /backup/local/vm1 --chain daily
  virtnbdbackup -d vm1 -l auto -o /mnt/offsite/vm1 --chain weekly`,
  };
}

// ------------------------------------------------------------------------------------------

export function virtnbdrestoreSpec(env: SpecEnv = currentSpecEnv()): CommandSpec {
  const g = G_GENERAL;
  const options: OptionSpec[] = [
    { short: '-a', long: '--action', kind: 'choice', choices: ['dump', 'restore', 'verify'], default: 'restore',
      metavar: 'ACTION', original: true, group: g,
      help: 'dump: print the metadata of every data file; restore; verify: check the data against the checksums' },
    { short: '-i', long: '--input', kind: 'string', metavar: 'DIR', required: true, original: true, group: g,
      help: 'Backup directory' },
    { short: '-o', long: '--output', kind: 'string', metavar: 'DIR', required: true, original: true, group: g,
      help: "Restore target directory; the values 'dump' and 'verify' select that action" },
    { short: '-u', long: '--until', kind: 'string', metavar: 'CHECKPOINT', original: true, group: g,
      help: 'Restore up to and including the backup that created this checkpoint' },
    { short: '-s', long: '--sequence', kind: 'string', metavar: 'FILE[,FILE...]', original: true, group: g,
      help: 'Explicit comma-separated list of data files (relative to --input), applied in this order' },
    { short: '-d', long: '--disk', kind: 'string', metavar: 'DEV', defaultText: 'all disks', original: true, group: g,
      help: 'Restore only this disk (e.g. sda)' },
    { short: '-n', long: '--noprogress', kind: 'flag', original: true, group: g,
      help: 'Do not show progress bars' },
    { short: '-f', long: '--socketfile', kind: 'string', metavar: 'PATH', default: `/var/tmp/virtnbdbackup.${env.pid}`,
      original: true, group: g,
      help: 'Unix socket of the local qemu-nbd serving the new image' },
    { short: '-r', long: '--raw', kind: 'flag', original: true, group: g,
      help: 'Restore raw-format disks by copying their data file as-is, and keep them in the adjusted config' },
    { short: '-c', long: '--adjust-config', kind: 'flag', original: true, group: g,
      help: 'Adjust the domain config to the restored images' },
    { short: '-D', long: '--define', kind: 'flag', original: true, group: g,
      help: 'Define the domain from the adjusted config (implies -c)' },
    { short: '-C', long: '--config-file', kind: 'string', metavar: 'NAME', default: 'vmconfig.xml', original: true,
      group: g,
      help: 'File name (base name only) of the restored domain config inside --output' },
    { short: '-N', long: '--name', kind: 'string', metavar: 'NAME', defaultText: 'restore_<original name>',
      original: true, group: g,
      help: 'Domain name written into the adjusted config' },
    { short: '-B', long: '--buffsize', kind: 'int', metavar: 'BYTES', default: 8192, original: true, group: g,
      help: 'Read size used by verify' },
    { short: '-A', long: '--preallocate', kind: 'flag', original: true, group: g,
      help: 'Create the images fully preallocated (preallocation=full)' },
    { long: '--compress', kind: 'flag', original: true, group: g,
      help: "Write the images through qemu's compress driver (compressed qcow2 clusters)" },
    ...remoteOptions(env, G_REMOTE_RESTORE),
    { short: '-L', long: '--logfile', kind: 'string', metavar: 'FILE', default: homeLog(env, 'virtnbdrestore.log'),
      original: true, group: G_LOGGING,
      help: 'Log file' },
    { long: '--nocolor', kind: 'flag', original: true, group: G_LOGGING,
      help: 'Plain, uncoloured log output on stderr' },
    { short: '-v', long: '--verbose', kind: 'flag', original: true, group: G_DEBUG,
      help: 'Enable debug output' },
    versionOpt(G_DEBUG),
    helpOpt(G_DEBUG),
    jsonOpt(G_EXT, 'Print the result (dump: the metadata; verify: the findings; restore: a summary) as JSON on stdout'),
  ];
  return {
    prog: 'virtnbdrestore',
    description: 'Restore, verify or dump backups made by virtnbdbackup.',
    version,
    options,
    validate: (v) => {
      const a = v.action;
      const o = v.output;
      if ((a === 'dump' && o === 'verify') || (a === 'verify' && o === 'dump')) {
        return `conflicting actions: --action ${String(a)} with --output ${String(o)}`;
      }
      return undefined;
    },
    epilog: `Examples:
  # metadata of every data file
  virtnbdrestore -i /backup/vm1 -o dump
  # verify the checksums (and the structure of the data files)
  virtnbdrestore -i /backup/vm1 -o verify
  # restore the latest point
  virtnbdrestore -i /backup/vm1 -o /var/lib/libvirt/images/r1
  # restore one disk up to a checkpoint
  virtnbdrestore -i /backup/vm1 -o /restore --until virtnbdbackup.2 -d sda
  # restore, adjust the config and define the domain under a new name
  virtnbdrestore -i /backup/vm1 -o /restore -cD --name vm1-restored
  # apply an explicit sequence of data files
  virtnbdrestore -i /backup/vm1 -o /restore --sequence sda.full.data,sda.inc.virtnbdbackup.1.data`,
  };
}

// ------------------------------------------------------------------------------------------

export function virtnbdmapSpec(env: SpecEnv = currentSpecEnv()): CommandSpec {
  const g = G_GENERAL;
  const options: OptionSpec[] = [
    { short: '-f', long: '--file', kind: 'string', metavar: 'FILE[,FILE...]', original: true, group: g,
      help: 'Data files of one disk: the full (or copy) first, then incrementals/differentials in order. Exactly one of -f and -i is required' },
    { short: '-b', long: '--blocksize', kind: 'int', metavar: 'BYTES', default: 4096, defaultText: 'no splitting', min: 1, original: true, group: g,
      help: "Maximum request size passed to nbdkit's blocksize filter; only used when given (the original split every request into 4096-byte pieces)" },
    { short: '-d', long: '--device', kind: 'string', metavar: 'DEV', default: '/dev/nbd0', original: true, group: g,
      help: 'Kernel NBD device to connect' },
    { short: '-e', long: '--export-name', kind: 'string', metavar: 'NAME', default: 'sda', original: true, group: g,
      help: 'NBD export name' },
    { short: '-t', long: '--threads', kind: 'int', metavar: 'N', default: 1, defaultText: "nbdkit's own, 16", min: 1, original: true, group: g,
      help: 'nbdkit worker threads (the plugin serves requests in parallel; the original defaulted to 1)' },
    { short: '-l', long: '--listen-address', kind: 'string', metavar: 'ADDR', default: '127.0.0.1', original: true,
      group: g,
      help: 'nbdkit listen address' },
    { short: '-p', long: '--listen-port', kind: 'int', metavar: 'PORT', default: 10809, min: 1, max: 65535,
      original: true, group: g,
      help: 'nbdkit listen port' },
    { short: '-n', long: '--noprogress', kind: 'flag', original: true, group: g,
      help: 'Do not show progress bars' },
    { short: '-L', long: '--logfile', kind: 'string', metavar: 'FILE', default: homeLog(env, 'virtnbdmap.log'),
      original: true, group: G_LOGGING,
      help: 'Log file' },
    { long: '--nocolor', kind: 'flag', original: true, group: G_LOGGING,
      help: 'Plain, uncoloured log output on stderr' },
    { short: '-r', long: '--readonly', kind: 'flag', original: true, group: g,
      help: 'Map read-only, without the copy-on-write layer' },
    { short: '-H', long: '--hexdump', kind: 'flag', original: true, group: G_DEBUG,
      help: 'Hexdump the served data into the nbdkit debug log (implies plugin debug)' },
    { short: '-v', long: '--verbose', kind: 'flag', original: true, group: G_DEBUG,
      help: 'Enable debug output; also keeps temporary files at exit' },
    versionOpt(G_DEBUG),
    helpOpt(G_DEBUG),
    // extensions (CLI.md §5): long-only except -i, which the original virtnbdmap does not use
    { short: '-i', long: '--input', kind: 'string', metavar: 'DIR', original: false, group: G_EXT,
      help: 'Backup directory: the chain of --disk up to --until is found automatically (instead of -f)' },
    { long: '--disk', kind: 'string', metavar: 'DEV', original: false, group: G_EXT,
      help: 'With -i: the disk to map (e.g. sda; default: the only disk of the backup)' },
    { long: '--until', kind: 'string', metavar: 'CHECKPOINT', original: false, group: G_EXT,
      help: 'With -i: map the state when this checkpoint was created (default: the newest point)' },
    { long: '--socket', kind: 'string', metavar: 'PATH', original: false, group: G_EXT,
      help: 'Serve the export on this unix socket instead of TCP --listen-address/--listen-port' },
    jsonOpt(G_EXT, 'Print the export (URI, socket, device, size, chain) as JSON on stdout once it is ready'),
    { long: '--workers', kind: 'int', metavar: 'N', default: 2, min: 1, original: false, group: G_EXT,
      help: 'Worker processes decompressing compressed data' },
    { long: '--no-device', kind: 'flag', original: false, group: G_EXT,
      help: 'Only serve the export; never touch /dev/nbd*' },
    // instant recovery (boot, migrate, mount)
    { long: '--boot', kind: 'flag', original: false, group: G_RECOVERY,
      help: 'With -i: boot a VM from the backup point (every disk served through the plugin, writes to a temporary overlay) and keep it running until Ctrl-C/SIGTERM' },
    { long: '--name', kind: 'string', metavar: 'NAME', original: false, group: G_RECOVERY,
      help: 'With --boot: name of the recovered domain (default: restore_<original name>, made unique)' },
    { long: '--uri', kind: 'string', metavar: 'URI', default: 'qemu:///system', original: false, group: G_RECOVERY,
      help: 'With --boot: libvirt connection URI' },
    { long: '--migrate-to', kind: 'string', metavar: 'DIR', original: false, group: G_RECOVERY,
      help: "With --boot: once the VM runs, copy every disk into new qcow2 images in DIR with libvirt's block copy, switch the VM over to them, release the backup and leave an ordinary persistent domain running" },
    { long: '--keep-overlays', kind: 'flag', original: false, group: G_RECOVERY,
      help: 'With --boot: keep the writes made by the recovered VM in qcow2 overlays in --overlay-dir instead of discarding them at the end' },
    { long: '--overlay-dir', kind: 'string', metavar: 'DIR', original: false, group: G_RECOVERY,
      help: 'With --boot: directory for overlays, sockets and console logs (default: a new directory under /var/tmp)' },
    { long: '--shutdown-timeout', kind: 'int', metavar: 'SECONDS', default: 60, min: 0, original: false, group: G_RECOVERY,
      help: 'With --boot: at Ctrl-C/SIGTERM, how long to wait for the guest to shut down after the ACPI request before the VM is powered off (0: power off at once); with --verify the default is 0' },
    // boot verification (issue 12)
    { long: '--verify', kind: 'flag', original: false, group: G_VERIFY,
      help: 'With --boot: prove the point boots, then stop: the VM runs isolated (no network interface) and headless, is checked (--expect-console, --expect-agent; without either it must keep running for --timeout/2 s without crashing), powered off and removed; a report goes to --report-dir. Exit 0 passed, 1 failed' },
    { long: '--all-points', kind: 'flag', original: false, group: G_VERIFY,
      help: 'With --verify: verify every point of the chain in turn, newest first, in one report' },
    { long: '--timeout', kind: 'int', metavar: 'SECONDS', default: 300, min: 1, original: false, group: G_VERIFY,
      help: 'With --verify: seconds after the VM started within which every condition must hold' },
    { long: '--expect-console', kind: 'string', metavar: 'REGEX', original: false, group: G_VERIFY,
      help: 'With --verify: the serial console output must match this JavaScript regular expression (e.g. "login:")' },
    { long: '--expect-agent', kind: 'flag', original: false, group: G_VERIFY,
      help: 'With --verify: the QEMU guest agent must answer guest-ping (its guest-get-osinfo answer goes into the report)' },
    { long: '--screenshot', kind: 'string', metavar: 'FILE.png', original: false, group: G_VERIFY,
      help: 'With --verify: save the screen as PNG before the VM is stopped (domains with a video device; with --all-points FILE-<checkpoint>.png)' },
    { long: '--report-dir', kind: 'string', metavar: 'DIR', original: false, group: G_VERIFY,
      help: 'With --verify: directory for report.json, report.txt and each boot\'s console log (default: ./virtnbd-verify-<date>-<time>; never inside the backup directory)' },
    { long: '--mount', kind: 'string', metavar: 'MOUNTPOINT', original: false, group: G_RECOVERY,
      help: 'Expose the chain of one disk and mount its file systems read-only under MOUNTPOINT (partN per partition, or MOUNTPOINT itself for a whole-disk file system) until Ctrl-C/SIGTERM' },
  ];
  return {
    prog: 'virtnbdmap',
    description: 'Map a backup chain to a block device or serve it as an NBD export.',
    version,
    options,
    validate: (v, given) => {
      const f = v.file !== undefined;
      const i = v.input !== undefined;
      if (f === i) return f ? 'argument -f/--file: not allowed with argument -i/--input' : 'one of the arguments -f/--file -i/--input is required';
      const boot = v.boot === true;
      if (boot && !i) return 'argument --boot: requires -i/--input (a backup directory with its vmconfig)';
      if (boot && v.mount !== undefined) return 'argument --mount: not allowed with argument --boot';
      for (const [opt, key] of [['--name', 'name'], ['--migrate-to', 'migrateTo'], ['--keep-overlays', 'keepOverlays'], ['--overlay-dir', 'overlayDir']] as const)
        if (!boot && v[key] !== undefined && v[key] !== false) return `argument ${opt}: requires --boot`;
      if (v.keepOverlays === true && v.overlayDir === undefined) return 'argument --keep-overlays: requires --overlay-dir (where the overlays are kept)';
      const verify = v.verify === true;
      if (verify && !boot) return 'argument --verify: requires --boot';
      for (const [opt, key] of [['--all-points', 'allPoints'], ['--timeout', 'timeout'], ['--expect-console', 'expectConsole'], ['--expect-agent', 'expectAgent'], ['--screenshot', 'screenshot'], ['--report-dir', 'reportDir']] as const)
        if (!verify && given.has(key)) return `argument ${opt}: requires --verify`;
      if (verify && v.migrateTo !== undefined) return 'argument --migrate-to: not allowed with argument --verify';
      if (verify && v.keepOverlays === true) return 'argument --keep-overlays: not allowed with argument --verify';
      if (v.allPoints === true && v.until !== undefined) return 'argument --all-points: not allowed with argument --until';
      if (typeof v.expectConsole === 'string') {
        try {
          new RegExp(v.expectConsole, 'm');
        } catch (e) {
          return `argument --expect-console: invalid regular expression: ${(e as Error).message}`;
        }
      }
      return undefined;
    },
    epilog: `Examples:
  # map a full backup to /dev/nbd0 (writes go to a temporary overlay)
  virtnbdmap -f /backup/vm1/sda.full.data
  # map full + incrementals, read-only, to another device
  virtnbdmap -f /backup/vm1/sda.full.data,/backup/vm1/sda.inc.virtnbdbackup.1.data -r -d /dev/nbd1
  # let virtnbdmap find the chain of disk sda up to a checkpoint
  virtnbdmap -i /backup/vm1 --disk sda --until virtnbdbackup.2
  # only serve the export on a unix socket (no /dev/nbd*), print its URI as JSON
  virtnbdmap -i /backup/vm1 --disk sda --no-device --socket /run/vm1-sda.sock --json
  # serve over TCP for another host (e.g. qemu-img convert nbd://hv2:10810/sda)
  virtnbdmap -i /backup/vm1 --no-device -l 0.0.0.0 -p 10810
  # boot the VM from its newest backup point (Ctrl-C shuts it down and discards its writes)
  virtnbdmap -i /backup/vm1 --boot
  # boot an older point under another name, then move it onto real storage while it runs
  virtnbdmap -i /backup/vm1 --boot --until virtnbdbackup.3 --name vm1-old --migrate-to /var/lib/libvirt/images/vm1-old
  # prove every point of the chain boots (isolated, headless), report in /var/log/vm1-verify
  virtnbdmap -i /backup/vm1 --boot --verify --all-points --expect-console 'login:' --report-dir /var/log/vm1-verify
  # single-file restore: mount the file systems of disk vda read-only
  virtnbdmap -i /backup/vm1 --disk vda --mount /mnt/vm1`,
  };
}

// ------------------------------------------------------------------------------------------

/** virtnbdprune (our command, README "Retention"): no original options; short letters as in virtnbdrestore. */
export function virtnbdpruneSpec(env: SpecEnv = currentSpecEnv()): CommandSpec {
  const g = G_GENERAL;
  const options: OptionSpec[] = [
    { short: '-i', long: '--input', kind: 'string', metavar: 'DIR', required: true, original: false, group: g,
      help: 'Backup directory (one chain: <domain>.cpt, <disk>.full.data, incrementals, differentials)' },
    { long: '--keep-last', kind: 'int', metavar: 'N', min: 1, original: false, group: g,
      help: 'Keep the newest N backup points (checkpoints and differentials); the oldest kept checkpoint becomes the new full' },
    { long: '--keep-within', kind: 'string', metavar: 'DURATION', original: false, group: g,
      help: 'Keep every point taken within DURATION before now (by the points\' backup dates): a number and one of s, m, h, d, w, y, e.g. 30d. Together with --keep-last a point is kept when either keeps it' },
    { long: '--dry-run', kind: 'flag', original: false, group: g,
      help: 'Only show which points would be merged and which files removed' },
    jsonOpt(g, 'Print the result (kept and merged points, new fulls, removed files, bytes, seconds) as JSON on stdout'),
    { short: '-L', long: '--logfile', kind: 'string', metavar: 'FILE', default: homeLog(env, 'virtnbdprune.log'), original: false, group: G_LOGGING,
      help: 'Log file' },
    { long: '--nocolor', kind: 'flag', original: false, group: G_LOGGING,
      help: 'Plain, uncoloured log output on stderr' },
    { short: '-q', long: '--quiet', kind: 'flag', original: false, group: G_LOGGING,
      help: 'No log output on stderr (the log file still gets it)' },
    { short: '-v', long: '--verbose', kind: 'flag', original: false, group: G_DEBUG,
      help: 'Enable debug output' },
    versionOpt(G_DEBUG),
    helpOpt(G_DEBUG),
  ];
  return {
    prog: 'virtnbdprune',
    description:
      'Retention for a backup chain without a new full backup: keep the newest points, merge the older ones into a ' +
      'synthetic full of the oldest kept point and remove the merged files. Works offline on the directory alone ' +
      '(neither libvirt nor the VM is needed); the next "virtnbdbackup -l inc" continues the chain. Crash-safe: an ' +
      'interrupted prune leaves every point restorable and is finished by the next run.',
    version,
    options,
    validate: (v) => {
      if (v.keepLast === undefined && v.keepWithin === undefined) return 'one of the arguments --keep-last --keep-within is required';
      if (typeof v.keepWithin === 'string' && !/^\s*[0-9]+\s*[smhdwy]\s*$/.test(v.keepWithin))
        return `argument --keep-within: invalid duration: '${v.keepWithin}' (expected a number and one of s, m, h, d, w, y, e.g. 30d)`;
      return undefined;
    },
    epilog: `Examples:
  # keep the newest 7 points of the chain in /backup/vm1, merge the rest into a full
  virtnbdprune -i /backup/vm1 --keep-last 7
  # keep everything from the last 30 days, but at least 3 points; show the plan only
  virtnbdprune -i /backup/vm1 --keep-within 30d --keep-last 3 --dry-run
  # nightly: back up (full the first time, then incremental), then prune; machine-readable result
  virtnbdbackup -d vm1 -l auto -o /backup/vm1 && virtnbdprune -i /backup/vm1 --keep-last 14 --json
  # after an interrupted prune (kill, power loss): run it again, it finishes the pending one first
  virtnbdprune -i /backup/vm1 --keep-last 14`,
  };
}
