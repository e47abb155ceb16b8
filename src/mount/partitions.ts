/**
 * What is on a disk image, for `virtnbdmap --mount`: the partition table (`sfdisk -J`) and the
 * file system signatures (`blkid -p -o export`, probed at a byte offset so that no loop device
 * or partition device node is needed), and the plan that follows from them — mount the whole
 * disk, or each partition that holds a mountable file system.
 *
 * The parsers are pure (unit-tested on captured output); the probe functions run the tools.
 */
import { execa } from 'execa';

export interface Partition {
  /** Partition number (the N of sda<N>). */
  number: number;
  /** Start in bytes from the start of the disk. */
  start: number;
  /** Size in bytes. */
  size: number;
  /** Partition type as sfdisk prints it (MBR hex code or GPT type GUID). */
  type: string;
}

export interface PartitionTable {
  /** `dos`, `gpt`, ... */
  label: string;
  sectorSize: number;
  partitions: Partition[];
}

/** Variables printed by `blkid -p -o export` (TYPE, USAGE, UUID, LABEL, PTTYPE, ...). */
export type Probe = Record<string, string>;

export class PartitionError extends Error {}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function nonNegInt(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new PartitionError(`sfdisk output: invalid ${what}: ${JSON.stringify(v)}`);
  return v;
}

/**
 * Parse `sfdisk -J` output. The partition number is the trailing number of the node name
 * (`disk1`, `/dev/nbd0p5`); start and size are converted from sectors to bytes.
 */
export function parseSfdiskJson(text: string): PartitionTable {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new PartitionError(`sfdisk output is not JSON: ${(e as Error).message}`);
  }
  if (!isRecord(doc) || !isRecord(doc.partitiontable)) throw new PartitionError('sfdisk output has no "partitiontable" object');
  const pt = doc.partitiontable;
  const label = typeof pt.label === 'string' ? pt.label : 'unknown';
  if (pt.unit !== undefined && pt.unit !== 'sectors') throw new PartitionError(`sfdisk output: unsupported unit ${JSON.stringify(pt.unit)}`);
  const sectorSize = pt.sectorsize === undefined ? 512 : nonNegInt(pt.sectorsize, 'sectorsize');
  if (sectorSize === 0) throw new PartitionError('sfdisk output: sector size 0');
  const list = pt.partitions === undefined ? [] : pt.partitions;
  if (!Array.isArray(list)) throw new PartitionError('sfdisk output: "partitions" is not a list');
  const partitions: Partition[] = list.map((p: unknown, i: number) => {
    if (!isRecord(p)) throw new PartitionError(`sfdisk output: partition ${i + 1} is not an object`);
    const node = typeof p.node === 'string' ? p.node : '';
    const m = /(\d+)$/.exec(node);
    if (!m) throw new PartitionError(`sfdisk output: cannot tell the partition number from node ${JSON.stringify(p.node)}`);
    return {
      number: Number(m[1]),
      start: nonNegInt(p.start, 'start') * sectorSize,
      size: nonNegInt(p.size, 'size') * sectorSize,
      type: typeof p.type === 'string' ? p.type : '',
    };
  });
  return { label, sectorSize, partitions };
}

/** Parse `blkid -o export` output (KEY=value lines; blkid escapes spaces in values with `\`). */
export function parseBlkidExport(text: string): Probe {
  const out: Probe = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    out[line.slice(0, eq)] = line.slice(eq + 1).replace(/\\(.)/g, '$1');
  }
  return out;
}

/** MBR container partitions (extended): their logical partitions are listed separately. */
export function isExtendedPartition(label: string, type: string): boolean {
  return label === 'dos' && ['5', 'f', '85'].includes(type.toLowerCase().replace(/^0x/, ''));
}

/** File systems whose journal must not be replayed when the device is read-only. */
const JOURNALLED = new Set(['ext3', 'ext4', 'xfs']);

/** Mount options for a file system of type `fstype` (always read-only). */
export function mountOptions(fstype: string, readonlyDevice: boolean): string {
  return readonlyDevice && JOURNALLED.has(fstype) ? 'ro,norecovery' : 'ro';
}

/** Why a probed area cannot be mounted (undefined: it can). */
export function notMountableReason(probe: Probe): string | undefined {
  const type = probe.TYPE;
  if (!type) return 'no recognised file system';
  if (probe.USAGE !== undefined && probe.USAGE !== 'filesystem') return `${type} (${probe.USAGE}), not a file system`;
  if (type === 'swap') return 'swap space';
  return undefined;
}

/** One thing to mount (or to skip, with `reason`). */
export interface MountPlanEntry {
  /** Partition number; null for the whole disk. */
  partition: number | null;
  offset: number;
  size: number;
  fstype: string | null;
  /** Set when the entry is skipped. */
  reason?: string;
}

/**
 * What to mount: the whole disk when blkid finds a file system on it, else every partition of
 * the table (extended containers left out), each with its probe result. Throws when the disk
 * has neither a file system nor a partition table.
 */
export function planMounts(
  diskSize: number,
  wholeDisk: Probe,
  table: PartitionTable | null,
  partitionProbes: ReadonlyMap<number, Probe>,
): MountPlanEntry[] {
  if (wholeDisk.TYPE && notMountableReason(wholeDisk) === undefined)
    return [{ partition: null, offset: 0, size: diskSize, fstype: wholeDisk.TYPE }];
  if (!table) {
    const what = wholeDisk.TYPE ? notMountableReason(wholeDisk) : 'no file system and no partition table';
    throw new PartitionError(`Nothing to mount: the disk holds ${what}`);
  }
  const plan: MountPlanEntry[] = [];
  for (const p of table.partitions) {
    if (isExtendedPartition(table.label, p.type)) continue;
    const probe = partitionProbes.get(p.number) ?? {};
    const reason = notMountableReason(probe);
    plan.push({ partition: p.number, offset: p.start, size: p.size, fstype: probe.TYPE ?? null, ...(reason ? { reason } : {}) });
  }
  return plan;
}

/** `sfdisk -J FILE`; null when the disk has no partition table. */
export async function readPartitionTable(file: string): Promise<PartitionTable | null> {
  const r = await execa('sfdisk', ['-J', file], { reject: false, stdin: 'ignore' });
  if (r.exitCode === 0) return parseSfdiskJson(r.stdout);
  if (/does not contain a recognized partition table/.test(r.stderr)) return null;
  throw new PartitionError(`sfdisk -J [${file}] failed (exit ${r.exitCode}): ${r.stderr.trim()}`);
}

/**
 * `blkid -p -o export [-O OFFSET -S SIZE] FILE` (low-level probe, no cache); {} when nothing
 * was found (blkid exit 2) or the signatures are ambivalent (exit 8: we do not guess).
 */
export async function probe(file: string, area?: { offset: number; size: number }): Promise<Probe> {
  const args = ['-p', '-o', 'export'];
  if (area) args.push('-O', String(area.offset), '-S', String(area.size));
  const r = await execa('blkid', [...args, file], { reject: false, stdin: 'ignore' });
  if (r.exitCode === 0) return parseBlkidExport(r.stdout);
  if (r.exitCode === 2 || r.exitCode === 8) return {};
  throw new PartitionError(`blkid -p [${file}]${area ? ` at offset ${area.offset}` : ''} failed (exit ${r.exitCode}): ${r.stderr.trim()}`);
}

/** Probe the disk and plan what to mount (see {@link planMounts}). */
export async function scanDisk(file: string, diskSize: number): Promise<MountPlanEntry[]> {
  const whole = await probe(file);
  if (whole.TYPE && notMountableReason(whole) === undefined) return planMounts(diskSize, whole, null, new Map());
  const table = await readPartitionTable(file);
  const probes = new Map<number, Probe>();
  for (const p of table?.partitions ?? []) {
    if (isExtendedPartition(table!.label, p.type)) continue;
    probes.set(p.number, await probe(file, { offset: p.start, size: p.size }));
  }
  return planMounts(diskSize, whole, table, probes);
}
