/**
 * SHA-256 of a disk at a point, computed in-process from the resolved chain (src/chain): each data
 * extent read from its file (raw pread, or its LZ4 frame decoded), zeros for the rest. Faster than
 * map-sha.ts's nbdkit round trip; used where many directory states must be checked (prune kill tests).
 */
import { createHash } from 'node:crypto';
import { openSync, readSync, closeSync } from 'node:fs';
import { chainFromDir, resolveSelected } from '../../src/chain/index.js';
import { ExtentKind } from '../../src/chain/extent-map.js';
import { decodeLz4Frame } from '../../src/saveset/lz4.js';

const ZEROS = Buffer.alloc(1 << 20);

export function resolvedSha(dir: string, disk: string, until?: string): string {
  const { map } = resolveSelected(chainFromDir(dir, { disk, until }));
  const h = createHash('sha256');
  const fds = map.files.map((f) => openSync(f, 'r'));
  try {
    for (const e of map.extents) {
      if (e.kind === ExtentKind.Zero) {
        for (let left = e.length; left > 0; left -= ZEROS.length) h.update(ZEROS.subarray(0, Math.min(left, ZEROS.length)));
      } else if (e.kind === ExtentKind.Raw) {
        const buf = Buffer.allocUnsafe(e.length);
        if (readSync(fds[e.file]!, buf, 0, e.length, e.fileOffset) !== e.length) throw new Error(`short read in ${map.files[e.file]}`);
        h.update(buf);
      } else {
        const frame = Buffer.allocUnsafe(e.csize);
        if (readSync(fds[e.file]!, frame, 0, e.csize, e.fileOffset) !== e.csize) throw new Error(`short read in ${map.files[e.file]}`);
        h.update(decodeLz4Frame(frame, e.usize, map.files[e.file]!, e.fileOffset).subarray(e.sliceOffset, e.sliceOffset + e.length));
      }
    }
  } finally {
    for (const fd of fds) closeSync(fd);
  }
  return h.digest('hex');
}
