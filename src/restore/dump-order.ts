/**
 * Chain order of all data files of one disk for `dump` (BEHAVIOUR.md §11.10 "ours: per disk in
 * chain order"), built on the chain layer (src/chain/order.ts, §11.2): every file is placed by
 * the chain that leads to it — `selectChain(dev, files, <its name>)` — so the files of one base
 * come in chain order (base, creating deltas, each with its non-creating deltas right after the
 * file that created their parent), and the chains of several bases (a fallback full starts a new
 * one) oldest first. Files that cannot be placed (a gap, conflicting files, a bad role) are
 * returned separately, in name order, with the reason.
 */
import type { ChainFile } from '../chain/discover.js';
import { baseRank, selectChain } from '../chain/order.js';

export interface DiskOrder {
  /** Files in chain order. */
  ordered: ChainFile[];
  /** Files that could not be placed in a chain, in name order. */
  unordered: ChainFile[];
  /** Why (the first reason met), when `unordered` is not empty. */
  reason?: string;
}

const byName = (a: ChainFile, b: ChainFile): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/** Order the data files of disk `dev` (all with that `<dev>` and a matching `diskName`). */
export function orderDiskFiles(dev: string, files: readonly ChainFile[]): DiskOrder {
  const placed: { file: ChainFile; base: ChainFile; depth: number }[] = [];
  const unordered: ChainFile[] = [];
  let reason: string | undefined;
  for (const file of files) {
    try {
      const chain = selectChain(dev, files, file.name);
      const base = chain.files[0];
      if (!base || chain.files[chain.files.length - 1] !== file) throw new Error(`${file.name} is not the last file of its own chain`);
      placed.push({ file, base, depth: chain.files.length });
    } catch (e) {
      reason ??= (e as Error).message;
      unordered.push(file);
    }
  }
  placed.sort((a, b) => {
    if (a.base !== b.base) return baseRank(a.base) - baseRank(b.base) || byName(a.base, b.base);
    return a.depth - b.depth || byName(a.file, b.file);
  });
  unordered.sort(byName);
  const out: DiskOrder = { ordered: placed.map((p) => p.file), unordered };
  if (unordered.length > 0 && reason !== undefined) out.reason = reason;
  return out;
}
