/** Extent planning (BEHAVIOUR.md §6.3–6.4): full plans, sparse detection with zero frames (D1z), tiling checks. */
import { checkTiling, deltaPlan, fullPlan, planExtents, clipExtents, type ExtentSource } from '../../../src/backup/extents.js';
import type { Extent } from '../../../src/nbd/client.js';

const K = 1024;
const ext = (offset: number, length: number, flags: number): Extent => ({ offset, length, flags });

/** A fake export: per context a tiling list; the source clips like the real client. */
function source(map: Record<string, Extent[]>, calls: Array<[string, number, number]> = []): ExtentSource {
  return async (ctx, offset, length) => {
    calls.push([ctx, offset, length]);
    const list = map[ctx];
    if (list === undefined) throw new Error(`no context ${ctx}`);
    return clipExtents(list, offset, length);
  };
}

test('full plan: data (0) and allocated zero (2) are data frames, holes (1, 3) zero frames, kept apart', () => {
  const p = fullPlan([ext(0, 4 * K, 0), ext(4 * K, 4 * K, 2), ext(8 * K, 8 * K, 3), ext(16 * K, 4 * K, 1)]);
  expect(p.extents).toEqual([
    { offset: 0, length: 4 * K, data: true },
    { offset: 4 * K, length: 4 * K, data: true },
    { offset: 8 * K, length: 8 * K, data: false },
    { offset: 16 * K, length: 4 * K, data: false },
  ]);
  expect(p.dataSize).toBe(8 * K);
  expect(p.zeroSize).toBe(12 * K);
});

test('delta plan: dirty ∩ allocation, no-data parts become zero frames (D1z)', () => {
  const dirty = [ext(0, 8 * K, 1), ext(8 * K, 8 * K, 0), ext(16 * K, 16 * K, 1)];
  const alloc = [ext(0, 4 * K, 0), ext(4 * K, 20 * K, 3), ext(24 * K, 8 * K, 0)];
  const p = deltaPlan(dirty, alloc);
  expect(p.extents).toEqual([
    { offset: 0, length: 4 * K, data: true },
    { offset: 4 * K, length: 4 * K, data: false },
    { offset: 16 * K, length: 8 * K, data: false },
    { offset: 24 * K, length: 8 * K, data: true },
  ]);
  expect(p.dataSize).toBe(12 * K);
  expect(p.zeroSize).toBe(12 * K);
});

test('delta plan without sparse detection: every dirty range is data', () => {
  const p = deltaPlan([ext(0, 8 * K, 1), ext(8 * K, 8 * K, 0), ext(16 * K, 4 * K, 1)], undefined);
  expect(p.extents).toEqual([
    { offset: 0, length: 8 * K, data: true },
    { offset: 16 * K, length: 4 * K, data: true },
  ]);
});

test('planExtents queries allocation only inside dirty ranges (P4) and gives the same result as a whole-disk sweep', async () => {
  const size = 64 * K;
  const alloc = [ext(0, 16 * K, 0), ext(16 * K, 16 * K, 3), ext(32 * K, 32 * K, 0)];
  const dirty = [ext(0, 8 * K, 0), ext(8 * K, 16 * K, 1), ext(24 * K, 32 * K, 0), ext(56 * K, 8 * K, 1)];
  const calls: Array<[string, number, number]> = [];
  const p = await planExtents(source({ 'base:allocation': alloc, 'qemu:dirty-bitmap:backup-vda': dirty }, calls), {
    level: 'inc',
    size,
    bitmap: 'backup-vda',
    noSparseDetection: false,
  });
  expect(p).toEqual(deltaPlan(dirty, alloc));
  expect(calls.filter((c) => c[0] === 'base:allocation')).toEqual([
    ['base:allocation', 8 * K, 16 * K],
    ['base:allocation', 56 * K, 8 * K],
  ]);
});

test('planExtents for a full reads only allocation and rejects a gap or unknown flags', async () => {
  const size = 16 * K;
  const p = await planExtents(source({ 'base:allocation': [ext(0, 8 * K, 0), ext(8 * K, 8 * K, 1)] }), { level: 'full', size, noSparseDetection: false });
  expect(p.dataSize).toBe(8 * K);
  await expect(planExtents(source({ 'base:allocation': [ext(0, 8 * K, 0)] }), { level: 'full', size, noSparseDetection: false })).rejects.toThrow(/cover 8192 bytes of a 16384-byte disk/);
  await expect(planExtents(source({ 'base:allocation': [ext(0, 16 * K, 4)] }), { level: 'copy', size, noSparseDetection: false })).rejects.toThrow(/unexpected extent flags 4/);
});

test('checkTiling detects overlaps and holes', () => {
  expect(() => checkTiling([ext(0, 4, 0), ext(2, 2, 0)], 4, 'x', [0])).toThrow(/do not tile/);
  expect(() => checkTiling([ext(0, 4, 0), ext(6, 2, 0)], 8, 'x', [0])).toThrow(/do not tile/);
  expect(() => checkTiling([ext(0, 4, 0), ext(4, 4, 0)], 8, 'x', [0])).not.toThrow();
});
