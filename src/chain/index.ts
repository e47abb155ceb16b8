/** The chain API: discover a set, select a disk's chain, index and resolve it. */
import { indexDataFile } from './data-file.js';
import type { SavesetIndex } from '../saveset/types.js';
import { discoverBackupDir, chainFileFor, type BackupDir, type ChainFile } from './discover.js';
import { selectChain, sequenceChain, ChainError, type Chain } from './order.js';
import { resolveChain } from './resolve.js';
import type { ExtentMap } from './extent-map.js';

export { discoverBackupDir, chainFileFor, selectChain, sequenceChain, resolveChain, ChainError };
export type { BackupDir, ChainFile, Chain, ExtentMap };

export interface ResolvedChain {
  chain: Chain;
  indexes: SavesetIndex[];
  map: ExtentMap;
}

/** Index every file of a chain (validating its structure) and resolve it. */
export function resolveSelected(chain: Chain): ResolvedChain {
  const indexes = chain.files.map((f) => indexDataFile(f.path));
  return { chain, indexes, map: resolveChain(indexes) };
}

/** Pick the disk of a set: the one asked for, or the only one. */
export function pickDisk(set: BackupDir, disk?: string): { dev: string; files: ChainFile[] } {
  const devs = [...set.disks.keys()].sort();
  if (devs.length === 0) throw new ChainError(`No data files found in directory: [${set.dir}]`);
  if (disk !== undefined) {
    const files = set.disks.get(disk);
    if (!files) throw new ChainError(`no data files for disk [${disk}] in [${set.dir}]; disks in this set: ${devs.join(', ')}`);
    return { dev: disk, files };
  }
  if (devs.length > 1) throw new ChainError(`the set in [${set.dir}] holds several disks (${devs.join(', ')}): choose one with --disk`);
  return { dev: devs[0], files: set.disks.get(devs[0]) ?? [] };
}

/** The chain of one disk of an already discovered set, newest point or `until`. */
export function chainFromSet(set: BackupDir, opts: { disk?: string; until?: string } = {}): Chain {
  const { dev, files } = pickDisk(set, opts.disk);
  return selectChain(dev, files, opts.until);
}

/** The chain of one disk of a backup directory, newest point or `until`. */
export function chainFromDir(dir: string, opts: { disk?: string; until?: string } = {}): Chain {
  return chainFromSet(discoverBackupDir(dir), opts);
}

/** The chain given as an explicit list of files (virtnbdmap -f, --sequence). */
export function chainFromFiles(paths: readonly string[], until?: string): Chain {
  return sequenceChain(paths.map((p) => chainFileFor(p)), until);
}
