/**
 * Resized disks (issue 4) without qemu: a chain whose virtualSize grows, shrinks (to a size that is
 * not cluster aligned) and grows again, written with our writer plain and LZ4
 * (test/helpers/resized-chain.ts). For every point (--until) the resolved map must have the
 * point's size and exactly the point's bytes — read back from the data files through the map —
 * and sizeChanges() must report the resizes of the selected chain.
 */
import { mkdirSync, mkdtempSync, openSync, readFileSync, readSync, closeSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chainFromDir, resolveSelected } from '../../../src/chain/index.js';
import { ExtentKind, type ExtentMap } from '../../../src/chain/extent-map.js';
import { sizeChanges } from '../../../src/chain/resize.js';
import { decodeLz4Frame } from '../../../src/saveset/lz4.js';
import { RESIZED_SIZES, sha256, writeResizedSet, type ResizedPoint } from '../../helpers/resized-chain.js';

/** The disk content a map describes, read from the chain's files. */
function contentOf(map: ExtentMap): Buffer {
  const out = Buffer.alloc(map.size);
  const fds = map.files.map((f) => openSync(f, 'r'));
  try {
    for (const e of map.extents) {
      if (e.kind === ExtentKind.Raw) readSync(fds[e.file]!, out, e.start, e.length, e.fileOffset);
      else if (e.kind === ExtentKind.Lz4) {
        const frame = Buffer.alloc(e.csize);
        readSync(fds[e.file]!, frame, 0, e.csize, e.fileOffset);
        decodeLz4Frame(frame, e.usize, map.files[e.file]!, e.fileOffset).copy(out, e.start, e.sliceOffset, e.sliceOffset + e.length);
      }
    }
  } finally {
    for (const fd of fds) closeSync(fd);
  }
  return out;
}

let work = '';
const sets: Record<'plain' | 'lz4', { dir: string; points: ResizedPoint[] }> = {} as never;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'vnbd-resized-unit-'));
  for (const [key, compress] of [['plain', false], ['lz4', 2]] as const) {
    const dir = join(work, key);
    mkdirSync(dir);
    sets[key] = { dir, points: await writeResizedSet(dir, work, 'vda', compress) };
  }
});

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the synthetic points differ and have the sizes under test', () => {
  const pts = sets.plain.points;
  expect(pts.map((p) => p.size)).toEqual(RESIZED_SIZES);
  expect(new Set(pts.map((p) => p.sha)).size).toBe(pts.length);
  // point 3 reads zeros where points 0 and 1 had data beyond point 2's end
  const p1 = readFileSync(pts[1]!.image);
  const p3 = readFileSync(pts[3]!.image);
  expect(p1.subarray(7 << 20, 8 << 20).some((b) => b !== 0)).toBe(true);
  expect(p1.subarray(9 << 20, 10 << 20).some((b) => b !== 0)).toBe(true);
  expect(p3.subarray(7 << 20, 8 << 20).every((b) => b === 0)).toBe(true);
  expect(p3.subarray(9 << 20, 10 << 20).every((b) => b === 0)).toBe(true);
});

describe.each(['plain', 'lz4'] as const)('%s chain', (key) => {
  test.each([0, 1, 2, 3, 4])('point %i: size and bytes of the resolved chain equal the image', (i) => {
    const { dir, points } = sets[key];
    const p = points[i]!;
    const { map, chain } = resolveSelected(chainFromDir(dir, { disk: 'vda', until: i === 4 ? undefined : p.checkpoint }));
    expect(chain.files.map((f) => f.name)).toEqual(points.slice(0, i + 1).map((q) => q.file));
    expect(map.size).toBe(p.size);
    const got = contentOf(map);
    expect(got.length).toBe(readFileSync(p.image).length);
    expect(sha256(got)).toBe(p.sha);
  });

  test('grown area not recorded by the inc reads as zeros, never as data of an older, larger point', () => {
    const { dir } = sets[key];
    const { map } = resolveSelected(chainFromDir(dir, { disk: 'vda', until: 'virtnbdbackup.3' }));
    const files = map.extents.filter((e) => e.kind !== ExtentKind.Zero && e.start + e.length > 6 * 1024 * 1024 + 4608);
    // only the data file of point 3 provides bytes beyond point 2's end
    expect(files.length).toBeGreaterThan(0);
    for (const e of files) expect(map.files[e.file]).toMatch(/vda\.inc\.virtnbdbackup\.3\.data$/);
  });
});

test('sizeChanges reports each resize of the selected chain, oldest first', () => {
  const dir = sets.plain.dir;
  expect(sizeChanges(chainFromDir(dir, { disk: 'vda', until: 'virtnbdbackup.0' }))).toEqual([]);
  expect(sizeChanges(chainFromDir(dir, { disk: 'vda', until: 'virtnbdbackup.2' }))).toEqual([
    { file: 'vda.inc.virtnbdbackup.1.data', from: RESIZED_SIZES[0], to: RESIZED_SIZES[1] },
    { file: 'vda.inc.virtnbdbackup.2.data', from: RESIZED_SIZES[1], to: RESIZED_SIZES[2] },
  ]);
  expect(sizeChanges(chainFromDir(dir, { disk: 'vda' })).map((c) => c.file)).toEqual([
    'vda.inc.virtnbdbackup.1.data',
    'vda.inc.virtnbdbackup.2.data',
    'vda.inc.virtnbdbackup.3.data',
  ]);
});
