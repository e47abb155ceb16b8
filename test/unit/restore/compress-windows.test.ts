/**
 * The compressed copy plan of copy-chain.ts (`--compress`): dataWindows + clusterRuns on random
 * maps. qemu's compress driver accepts each cluster once and whole, so the plan must write every
 * cluster that holds data exactly once, aligned, never a cluster without data, and cover every
 * data byte of the map exactly once (windows aligned, parts inside their window).
 */
import { dataWindows, clusterRuns } from '../../../src/restore/copy-chain.js';
import { ExtentKind, type ExtentMap, type MapExtent } from '../../../src/chain/extent-map.js';
import { prng, randInt } from '../../../src/devtools/prng.js';

function randomMap(seed: number, size: number): ExtentMap {
  const r = prng(seed);
  const extents: MapExtent[] = [];
  for (let at = 0; at < size; ) {
    const len = Math.min(size - at, randInt(r, 1, r() < 0.3 ? 300_000 : 5000));
    const k = r();
    const kind = k < 0.4 ? ExtentKind.Zero : k < 0.7 ? ExtentKind.Raw : ExtentKind.Lz4;
    const last = extents[extents.length - 1];
    if (kind === ExtentKind.Zero && last?.kind === ExtentKind.Zero) last.length += len;
    else
      extents.push({
        start: at, length: len, kind, file: kind === ExtentKind.Zero ? 0 : randInt(r, 0, 2), fileOffset: randInt(r, 0, 1e6),
        csize: kind === ExtentKind.Lz4 ? 100 : 0, usize: kind === ExtentKind.Lz4 ? len + 1000 : 0, sliceOffset: kind === ExtentKind.Lz4 ? 500 : 0,
      });
    at += len;
  }
  return { size, files: ['a', 'b', 'c'], extents };
}

test.each([
  [1, 8 << 20, 65536, 1 << 20],
  [2, (8 << 20) + 4608, 65536, 1 << 20],
  [3, 3_000_000, 4096, 65536],
  [4, 20 << 20, 2 << 20, 4 << 20],
  [5, 1_234_567, 512, 8192],
])('seed %i: every data cluster written once, whole, aligned; every data byte once', (seed, size, cs, win) => {
  const map = randomMap(seed, size);
  const limit = Math.ceil(size / 512) * 512; // qemu's image size
  const dataByte = new Uint8Array(size);
  for (const e of map.extents) if (e.kind !== ExtentKind.Zero) dataByte.fill(1, e.start, e.start + e.length);
  const covered = new Uint8Array(size);
  const written = new Uint8Array(Math.ceil(limit / cs));
  let prevEnd = -1;
  for (const w of dataWindows(map, win)) {
    expect(w.start % win).toBe(0);
    expect(w.start).toBeGreaterThan(prevEnd - 1);
    prevEnd = w.start + w.length;
    for (const p of w.parts) {
      expect(p.start).toBeGreaterThanOrEqual(w.start);
      expect(p.start + p.length).toBeLessThanOrEqual(w.start + w.length);
      const src = map.extents.find((e) => e.start <= p.start && p.start < e.start + e.length)!;
      expect(p.kind).toBe(src.kind);
      const d = p.start - src.start;
      if (p.kind === ExtentKind.Raw) expect(p.fileOffset).toBe(src.fileOffset + d);
      if (p.kind === ExtentKind.Lz4) expect([p.fileOffset, p.sliceOffset]).toEqual([src.fileOffset, src.sliceOffset + d]);
      for (let i = p.start; i < p.start + p.length; i++) covered[i]!++;
    }
    for (const [s, e] of clusterRuns(w, cs, limit)) {
      expect(s % cs).toBe(0);
      expect(e === limit || e % cs === 0).toBe(true);
      expect(s).toBeGreaterThanOrEqual(w.start);
      expect(e).toBeLessThanOrEqual(Math.min(w.start + win, limit));
      for (let c = s / cs; c < e / cs; c++) written[c]!++;
    }
  }
  for (let i = 0; i < size; i++) if (covered[i] !== dataByte[i]) throw new Error(`byte ${i}: covered ${covered[i]} times, data ${dataByte[i]}`);
  for (let c = 0; c < written.length; c++) {
    const hasData = dataByte.subarray(c * cs, Math.min((c + 1) * cs, size)).some((b) => b === 1);
    if (written[c] !== (hasData ? 1 : 0)) throw new Error(`cluster ${c}: written ${written[c]} times, has data ${hasData}`);
  }
});
