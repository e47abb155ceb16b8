/**
 * Resized disks (BEHAVIOUR.md §11.2 check 5, §11.5): the places in a chain where a file's
 * `virtualSize` differs from the previous file's. Resolution (resolve.ts) already gives the right
 * content — the newest size, older data cut at the smallest size of any later file — so these are
 * only reported; a restore or map of a resized chain needs nothing else.
 */
import type { Chain } from './order.js';

/** One resize in a chain: the file whose virtualSize differs from the file before it. */
export interface SizeChange {
  /** Base name of the file with the new size. */
  file: string;
  from: number;
  to: number;
}

/** The resizes of a chain, oldest first (empty when every file has the same virtualSize). */
export function sizeChanges(chain: Chain): SizeChange[] {
  const out: SizeChange[] = [];
  for (let i = 1; i < chain.files.length; i++) {
    const from = chain.files[i - 1].metadata.virtualSize;
    const to = chain.files[i].metadata.virtualSize;
    if (from !== to) out.push({ file: chain.files[i].name, from, to });
  }
  return out;
}
